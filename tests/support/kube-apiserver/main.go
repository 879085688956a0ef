// Command l2lb-kube-apiserver runs a real Kubernetes API server (k8s.io/kubernetes
// cmd/kube-apiserver/app, the same code as the released binary) together with an embedded etcd,
// both on 127.0.0.1 only, for l2lb's test suite (the "envtest" approach).
//
// It generates a CA and a serving certificate, a service-account key pair, a static token file
// (one user in system:masters) and a kubeconfig, starts etcd on free loopback ports in
// <data-dir>/etcd and then kube-apiserver. Every argument after "--" goes to kube-apiserver
// unchanged (and wins over the defaults set here, since the last value of a flag counts).
//
//	l2lb-kube-apiserver --data-dir DIR --port N --kubeconfig-out PATH [--token T] [--audit-log PATH]
//	    [--san IP|DNS ...] [--service-account-admission] [-- kube-apiserver flags]
//
// For a whole cluster (tests/e2e): --san adds the addresses nodes and pods use to the serving
// certificate, --service-account-admission keeps the ServiceAccount admission plugin (pods get
// their token volume), and "-- --bind-address=... --advertise-address=..." moves it off loopback.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	namespacecontroller "k8s.io/kubernetes/pkg/controller/namespace"
)

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:apiserver", "l2lb-controllers"]
- level: None
  nonResourceURLs: ["/readyz*", "/healthz*", "/livez*"]
- level: Metadata
`

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("l2lb-kube-apiserver", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "directory for etcd data, certificates and generated files (required)")
	port := fs.Int("port", 0, "secure port of kube-apiserver on 127.0.0.1 (0: pick a free one)")
	kubeconfigOut := fs.String("kubeconfig-out", "", "where to write the kubeconfig (default <data-dir>/kubeconfig)")
	token := fs.String("token", "", "bearer token of the test user (default: random)")
	auditLog := fs.String("audit-log", "", "write a JSON audit log (level Metadata) of every request to this path")
	var users userList
	fs.Var(&users, "user", "another user NAME:TOKEN in system:masters (repeatable)")
	controllers := fs.Bool("namespace-controller", true, "run the namespace controller (deletes a namespace's contents)")
	var sans sanList
	fs.Var(&sans, "san", "another IP address or DNS name in the serving certificate (repeatable)")
	saAdmission := fs.Bool("service-account-admission", false,
		"keep the ServiceAccount admission plugin (needs a controller-manager that makes default ServiceAccounts)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver: --data-dir is required")
		return 2
	}
	extra := fs.Args()
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver:", err)
		return 1
	}
	if *kubeconfigOut == "" {
		*kubeconfigOut = filepath.Join(*dataDir, "kubeconfig")
	}
	if *token == "" {
		t, err := randomToken()
		if err != nil {
			fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver:", err)
			return 1
		}
		*token = t
	}
	if *port == 0 {
		p, err := freePort()
		if err != nil {
			fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver:", err)
			return 1
		}
		*port = p
	}

	controllerToken, err := randomToken()
	if err != nil {
		fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver:", err)
		return 1
	}
	users = append(users, "l2lb-test:"+*token, "l2lb-controllers:"+controllerToken)
	files, err := writeFiles(*dataDir, users, sans)
	if err != nil {
		fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver: generating certificates:", err)
		return 1
	}
	serverURL := "https://127.0.0.1:" + strconv.Itoa(*port)
	if err := writeKubeconfig(*kubeconfigOut, serverURL, files.caPEM, *token); err != nil {
		fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver: writing kubeconfig:", err)
		return 1
	}

	etcd, etcdURL, err := startEtcd(filepath.Join(*dataDir, "etcd"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver: starting etcd:", err)
		return 1
	}
	defer etcd.Close()

	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(*port),
		"--tls-cert-file=" + files.certFile,
		"--tls-private-key-file=" + files.keyFile,
		"--token-auth-file=" + files.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + files.saPubFile,
		"--service-account-signing-key-file=" + files.saKeyFile,
		"--service-cluster-ip-range=10.96.0.0/16",
		// No Endpoints for the "kubernetes" Service: one background writer less; nothing in the
		// tests needs them.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		"--cert-dir=" + filepath.Join(*dataDir, "certs"),
	}
	if !*saAdmission {
		// No controller-manager runs: nothing would create the default ServiceAccount that this
		// plugin waits for when Pods are created. (A list flag: a later value would add to it.)
		args = append(args, "--disable-admission-plugins=ServiceAccount")
	}
	if *auditLog != "" {
		policy := filepath.Join(*dataDir, "audit-policy.yaml")
		if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver:", err)
			return 1
		}
		args = append(args,
			"--audit-policy-file="+policy,
			"--audit-log-path="+*auditLog,
			"--audit-log-format=json",
			"--audit-log-mode=blocking",
			"--audit-log-maxsize=0",
		)
	}
	args = append(args, extra...)

	fmt.Printf("l2lb-kube-apiserver: etcd %s, kube-apiserver %s, kubeconfig %s\n", etcdURL, serverURL, *kubeconfigOut)

	// kube-apiserver handles SIGTERM/SIGINT itself (graceful shutdown, then Run returns); make sure
	// the process ends even when that shutdown hangs.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	// A test run that dies without stopping us (SIGKILL, timeout) must not leave us behind: when
	// our parent changes (we were re-parented), stop as if told to.
	go func(parent int) {
		for os.Getppid() == parent {
			time.Sleep(time.Second)
		}
		fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver: parent process gone, stopping")
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}(os.Getppid())
	go func() {
		<-sigs
		cancel() // stop the controller first, so that no client of ours holds the server open
		time.Sleep(20 * time.Second)
		fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver: shutdown took over 20 s, exiting")
		os.Exit(1)
	}()

	if *controllers {
		go runNamespaceController(ctx, serverURL, controllerToken, files.caFile)
	}

	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

type userList []string

func (u *userList) String() string { return fmt.Sprint(*u) }

func (u *userList) Set(v string) error {
	name, token, ok := strings.Cut(v, ":")
	if !ok || name == "" || token == "" || strings.ContainsAny(v, ",\"\n") {
		return fmt.Errorf("want NAME:TOKEN, got %q", v)
	}
	*u = append(*u, v)
	return nil
}

type sanList []string

func (s *sanList) String() string { return fmt.Sprint(*s) }

func (s *sanList) Set(v string) error {
	if v == "" || strings.ContainsAny(v, ", \n") {
		return fmt.Errorf("want one IP address or DNS name, got %q", v)
	}
	*s = append(*s, v)
	return nil
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// runNamespaceController runs kube-controller-manager's namespace controller (the only controller
// here): once kube-apiserver is ready, a deleted namespace gets its contents deleted and its
// "kubernetes" finalizer removed, as in a cluster.
func runNamespaceController(ctx context.Context, server, token, caFile string) {
	cfg := &rest.Config{
		Host:            server,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: caFile},
		QPS:             100,
		Burst:           500,
		UserAgent:       "l2lb-kube-apiserver/namespace-controller",
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver: namespace controller:", err)
		return
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "l2lb-kube-apiserver: namespace controller:", err)
		return
	}
	for {
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	nc := namespacecontroller.NewNamespaceController(
		ctx, client, meta, client.Discovery().ServerPreferredNamespacedResources,
		factory.Core().V1().Namespaces(), 5*time.Minute, v1.FinalizerKubernetes)
	factory.Start(ctx.Done())
	nc.Run(ctx, 5)
}

type generated struct {
	caPEM                                              []byte
	caFile                                             string
	certFile, keyFile, tokenFile, saKeyFile, saPubFile string
}

func writeFiles(dir string, users []string, sans []string) (*generated, error) {
	g := &generated{
		caFile:    filepath.Join(dir, "ca.crt"),
		certFile:  filepath.Join(dir, "serving.crt"),
		keyFile:   filepath.Join(dir, "serving.key"),
		tokenFile: filepath.Join(dir, "tokens.csv"),
		saKeyFile: filepath.Join(dir, "sa.key"),
		saPubFile: filepath.Join(dir, "sa.pub"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "l2lb-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
	}
	for _, san := range sans {
		if ip := net.ParseIP(san); ip != nil {
			srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, ip)
		} else {
			srvTmpl.DNSNames = append(srvTmpl.DNSNames, san)
		}
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	g.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), g.caPEM...)
	if err := os.WriteFile(g.certFile, chain, 0o600); err != nil {
		return nil, err
	}
	if err := writeECKey(g.keyFile, srvKey); err != nil {
		return nil, err
	}
	if err := os.WriteFile(g.caFile, g.caPEM, 0o600); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := writeECKey(g.saKeyFile, saKey); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(g.saPubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		return nil, err
	}
	var lines strings.Builder
	for _, u := range users {
		name, token, _ := strings.Cut(u, ":")
		fmt.Fprintf(&lines, "%s,%s,%s,\"system:masters\"\n", token, name, name)
	}
	if err := os.WriteFile(g.tokenFile, []byte(lines.String()), 0o600); err != nil {
		return nil, err
	}
	return g, nil
}

func writeECKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func writeKubeconfig(path, server string, caPEM []byte, token string) error {
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: l2lb-real
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: l2lb-test
  user:
    token: %s
contexts:
- name: l2lb-real
  context:
    cluster: l2lb-real
    user: l2lb-test
    namespace: default
current-context: l2lb-real
`, server, base64.StdEncoding.EncodeToString(caPEM), token)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dir string) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	clientURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(clientPort)}
	peerURL := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(peerPort)}
	cfg := embed.NewConfig()
	cfg.Name = "l2lb-test"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true // test data only: a crash loses nothing that matters
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, "", fmt.Errorf("etcd not ready after 60 s")
	}
	return e, clientURL.String(), nil
}
