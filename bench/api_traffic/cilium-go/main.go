// Command cilium-lease-model is one node of the Cilium L2-announcement model for bench/api_traffic
// and bench/compare: what Cilium's agent runs for L2 announcements, with client-go's own
// leaderelection package (the code Cilium uses) -- one leader election per Service on a Lease
// named cilium-l2announce-<namespace>-<service>, with Cilium's defaults (lease duration 15 s,
// renew deadline 5 s, retry period 2 s), all through ONE client per node whose client-side rate
// limit is the agent's (--qps/--burst).
//
//	cilium-lease-model --kubeconfig FILE --node NAME --services N [--service-namespace bench]
//	                   [--lease-namespace kube-system] [--qps 5] [--burst 10] [--seconds 3600]
//
// Runs until SIGTERM/SIGINT or --seconds (bounded), then prints one JSON line of counters:
// acquisitions, losses and leader changes seen.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of this node's agent (required)")
	node := flag.String("node", "", "node name = lease holder identity (required)")
	services := flag.Int("services", 1, "number of Services (svc0..svcN-1), one Lease each")
	svcNS := flag.String("service-namespace", "bench", "namespace of the Services (part of the Lease name)")
	leaseNS := flag.String("lease-namespace", "kube-system", "namespace of the Leases")
	qps := flag.Float64("qps", 5, "client-side rate limit of the node's client (requests/s)")
	burst := flag.Int("burst", 10, "client-side burst of the node's client")
	duration := flag.Duration("lease-duration", 15*time.Second, "Cilium --l2-announcements-lease-duration")
	renew := flag.Duration("renew-deadline", 5*time.Second, "Cilium --l2-announcements-renew-deadline")
	retry := flag.Duration("retry-period", 2*time.Second, "Cilium --l2-announcements-retry-period")
	seconds := flag.Float64("seconds", 3600, "stop after this many seconds")
	flag.Parse()
	if *kubeconfig == "" || *node == "" || *services < 1 || *services > 100000 {
		fmt.Fprintln(os.Stderr, "cilium-lease-model: --kubeconfig and --node are required; --services 1..100000")
		os.Exit(2)
	}
	klog.SetOutput(os.Stderr)
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cilium-lease-model:", err)
		os.Exit(1)
	}
	cfg.QPS = float32(*qps)
	cfg.Burst = *burst
	cfg.UserAgent = "cilium-lease-model/" + *node
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cilium-lease-model:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*seconds*float64(time.Second)))
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; cancel() }()

	var acquired, lost, changes atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < *services; i++ {
		name := fmt.Sprintf("cilium-l2announce-%s-svc%d", *svcNS, i)
		lock := &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: *leaseNS, Name: name},
			Client:     client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: *node},
		}
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   *duration,
			RenewDeadline:   *renew,
			RetryPeriod:     *retry,
			ReleaseOnCancel: true,
			Name:            name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) { acquired.Add(1) },
				OnStoppedLeading: func() { lost.Add(1) },
				OnNewLeader:      func(string) { changes.Add(1) },
			},
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "cilium-lease-model:", err)
			os.Exit(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// as Cilium: a lost lease is campaigned for again until the agent stops
			for ctx.Err() == nil {
				le.Run(ctx)
			}
		}()
	}
	wg.Wait()
	out, _ := json.Marshal(map[string]int64{"acquired": acquired.Load(), "lost": lost.Load(), "leader_changes": changes.Load()})
	fmt.Println(string(out))
}
