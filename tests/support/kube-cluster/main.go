// Command l2lb-kube runs one of the Kubernetes node and control-plane programs of the release it
// links (k8s.io/kubernetes v1.36.3, the code of the released binaries), for l2lb's end-to-end
// cluster (tests/e2e): one binary, one compile, several commands, like the old hyperkube.
//
//	l2lb-kube kubelet|kube-proxy|kube-controller-manager|kube-scheduler|kubectl [flags]
//
// Called through a symlink named after a command (e.g. .../kubectl), it runs that command.
// The API server is the sibling harness tests/support/kube-apiserver (kube-apiserver + etcd).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	_ "time/tzdata" // kube-controller-manager: CronJob time zones

	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl: client auth plugins
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

const usage = "usage: l2lb-kube kubelet|kube-proxy|kube-controller-manager|kube-scheduler|kubectl [flags]"

func main() {
	name := filepath.Base(os.Args[0])
	if strings.HasPrefix(name, "l2lb-kube") || name == "main" {
		if len(os.Args) < 2 {
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
		name = os.Args[1]
		os.Args = os.Args[1:] // each command parses os.Args[1:] as its own flags
	}
	switch name {
	case "kubelet":
		os.Exit(cli.Run(kubelet.NewKubeletCommand(context.Background())))
	case "kube-proxy":
		os.Exit(cli.Run(proxy.NewProxyCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(kcm.NewControllerManagerCommand()))
	case "kube-scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "kubectl":
		logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) //nolint:errcheck
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	default:
		fmt.Fprintf(os.Stderr, "l2lb-kube: unknown command %q\n%s\n", name, usage)
		os.Exit(2)
	}
}
