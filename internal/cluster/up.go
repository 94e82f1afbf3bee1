package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"

	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrLeftovers means a previous cluster's state is still there.
var ErrLeftovers = errors.New("leftovers")

// Up starts the cluster and returns when the node is Ready and the
// controllers have made the default ServiceAccount; on any failure it
// tears down what it started (Down) and returns the first error.
func Up(ctx context.Context, c Config, out io.Writer) (err error) {
	unlock, err := lock(5 * time.Minute)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(c.path("snapshot.json")); err == nil {
		return fmt.Errorf("%w: a previous cluster's state is in %s (still running, or killed): run `make cluster-down` first", ErrLeftovers, c.StateDir)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kube-router"} {
		if _, err := os.Stat(filepath.Join(c.K8sBin, b)); err != nil {
			return fmt.Errorf("no %s in %s: run `make node-tools`", b, c.K8sBin)
		}
	}
	for _, img := range c.Images {
		if _, err := os.Stat(img); err != nil {
			return fmt.Errorf("image archive %s: %w", img, err)
		}
	}
	if _, err := readSysctl(bridgeSysctl); err != nil {
		return errors.New("no /proc/sys/net/bridge/bridge-nf-call-iptables: load br_netfilter (modprobe br_netfilter), or NetworkPolicies cannot see the traffic between pods on the bridge")
	}
	if err := checkPorts(c.NodeIP); err != nil {
		return err
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return err
	}
	if err := c.checkDisk(); err != nil {
		return err
	}
	// A previous run's logs (kept by Down) move aside: logs/ is this run's.
	if _, err := os.Stat(c.path("logs")); err == nil {
		_ = os.RemoveAll(c.path("logs.previous"))
		if err := os.Rename(c.path("logs"), c.path("logs.previous")); err != nil {
			return err
		}
	}
	snap, err := TakeSnapshot(c.StateDir)
	if err != nil {
		return fmt.Errorf("reading the host's state: %w", err)
	}
	if err := snap.save(c.path("snapshot.json")); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			fmt.Fprintf(out, "hubcredits-cluster: start failed; tearing down what was started\n")
			if derr := down(c, out); derr != nil {
				err = fmt.Errorf("%w (and the teardown: %w)", err, derr)
			}
		}
	}()
	step := func(what string) func() {
		start := time.Now()
		fmt.Fprintf(out, "  %-44s", what+" ...")
		return func() { fmt.Fprintf(out, " %.1fs\n", time.Since(start).Seconds()) }
	}

	done := step("certificates and configuration")
	if err := c.writeConfig(); err != nil {
		return err
	}
	done()

	done = step("nftables: pod traffic stays on this machine")
	nft := exec.Command("nft", "-f", c.path("nftables.conf"))
	if b, err := nft.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f %s: %w: %s", c.path("nftables.conf"), err, b)
	}
	done()

	done = step("etcd")
	if err := c.start("etcd", c.bin("etcd"),
		"--name=hubcredits-cluster", "--data-dir="+c.path("etcd"),
		fmt.Sprintf("--listen-client-urls=http://127.0.0.1:%d", etcdClientPort),
		fmt.Sprintf("--advertise-client-urls=http://127.0.0.1:%d", etcdClientPort),
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", etcdPeerPort),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", etcdPeerPort),
		fmt.Sprintf("--initial-cluster=hubcredits-cluster=http://127.0.0.1:%d", etcdPeerPort),
		"--unsafe-no-fsync=true", "--log-level=warn",
	); err != nil {
		return err
	}
	if err := c.waitFor("etcd", time.Minute, func() bool { return httpOK(fmt.Sprintf("http://127.0.0.1:%d/health", etcdClientPort)) }); err != nil {
		return err
	}
	done()

	done = step("kube-apiserver")
	if err := c.start("kube-apiserver", c.bin("kube-apiserver"), c.apiServerArgs()...); err != nil {
		return err
	}
	cs, err := c.client()
	if err != nil {
		return err
	}
	if err := c.waitFor("kube-apiserver", 2*time.Minute, func() bool {
		b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(b) == "ok"
	}); err != nil {
		return err
	}
	done()

	done = step("kube-controller-manager, kube-scheduler")
	if err := c.start("kube-controller-manager", c.bin("kube-controller-manager"),
		"--kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", controllerMgrPort),
		"--leader-elect=false", "--use-service-account-credentials=true",
		"--service-account-private-key-file="+c.pki("sa.key"), "--root-ca-file="+c.pki("ca.crt"),
		"--cluster-signing-cert-file="+c.pki("ca.crt"), "--cluster-signing-key-file="+c.pki("ca.key"),
		"--service-cluster-ip-range="+ServiceCIDR,
		// A lost node is noticed in 20 s (default 50 s): the tests lose one.
		"--node-monitor-grace-period=20s", "--node-monitor-period=2s",
		c.v(),
	); err != nil {
		return err
	}
	if err := c.start("kube-scheduler", c.bin("kube-scheduler"),
		"--kubeconfig="+c.path("scheduler.kubeconfig"),
		"--authentication-kubeconfig="+c.path("scheduler.kubeconfig"),
		"--authorization-kubeconfig="+c.path("scheduler.kubeconfig"),
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", schedulerPort),
		"--leader-elect=false", c.v(),
	); err != nil {
		return err
	}
	done()

	done = step("containerd")
	if err := c.start("containerd", "containerd", "--config="+c.path("containerd.toml")); err != nil {
		return err
	}
	if err := c.waitFor("containerd", time.Minute, func() bool {
		return exec.Command("ctr", "--address", c.containerdSocket(), "version").Run() == nil
	}); err != nil {
		return err
	}
	done()

	for _, img := range c.Images {
		done = step("image " + filepath.Base(img))
		imp := exec.Command("ctr", "--address", c.containerdSocket(), "-n", "k8s.io", "images", "import", img)
		if b, err := imp.CombinedOutput(); err != nil {
			return fmt.Errorf("importing %s into containerd failed: %w: %s", img, err, strings.TrimSpace(string(b)))
		}
		done()
	}

	done = step("kubelet")
	if err := c.startKubelet(); err != nil {
		return err
	}
	done()

	done = step("kube-proxy (nftables)")
	if err := c.start("kube-proxy", c.bin("kube-proxy"), "--config="+c.path("kube-proxy.yaml"), c.v()); err != nil {
		return err
	}
	if err := c.waitFor("kube-proxy", time.Minute, func() bool {
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", proxyHealthzPort))
	}); err != nil {
		return err
	}
	done()

	done = step("node Ready, default ServiceAccount")
	if err := c.waitFor("kubelet", 2*time.Minute, func() bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	}); err != nil {
		return err
	}
	if err := c.waitFor("kube-controller-manager", time.Minute, func() bool {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	}); err != nil {
		return err
	}
	done()

	done = step("kube-router (NetworkPolicies)")
	if err := c.startKubeRouter(ctx, cs); err != nil {
		return err
	}
	done()
	// kubelet has set its sysctls by now (at start, once): put them back.
	return restoreSysctls(snap, sysctls[1:])
}

// kubeRouterRules are what kube-router's network policy controller reads:
// its informers list and watch these (services, endpoints and slices too,
// though only the firewall runs), and it gets its own Node. It writes
// nothing to the API.
var kubeRouterRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"pods", "namespaces", "nodes", "services", "endpoints"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch"}},
}

// startKubeRouter grants kube-router's user its ClusterRole, sets
// net.bridge.bridge-nf-call-iptables (Down puts it back) and starts the
// network policy controller alone; it returns once kube-router is healthy
// and its chains are in the filter table. The node must exist (kube-router
// reads its addresses at start).
func (c Config) startKubeRouter(ctx context.Context, cs kubernetes.Interface) error {
	meta := metav1.ObjectMeta{Name: kubeRouterUser}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: meta, Rules: kubeRouterRules}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("ClusterRole %s: %w", kubeRouterUser, err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: meta,
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: kubeRouterUser},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: kubeRouterUser}},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("ClusterRoleBinding %s: %w", kubeRouterUser, err)
	}
	if err := writeSysctl(bridgeSysctl, "1"); err != nil {
		return fmt.Errorf("setting net.bridge.bridge-nf-call-iptables=1: %w", err)
	}
	if err := c.start("kube-router", c.bin("kube-router"),
		"--kubeconfig="+c.path("kube-router.kubeconfig"),
		"--hostname-override="+NodeName,
		"--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
		"--service-cluster-ip-range="+ServiceCIDR,
		fmt.Sprintf("--health-port=%d", kubeRouterHealthPort), "--metrics-port=0",
		c.v(),
	); err != nil {
		return err
	}
	return c.waitFor("kube-router", time.Minute, func() bool {
		if !httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", kubeRouterHealthPort)) {
			return false
		}
		chains, err := kubeRouterChains()
		return err == nil && contains(chains, "KUBE-ROUTER-FORWARD")
	})
}

func (c Config) startKubelet() error {
	if err := c.start("kubelet", c.bin("kubelet"),
		"--config="+c.path("kubelet.yaml"), "--kubeconfig="+c.path("kubelet.kubeconfig"),
		"--root-dir="+c.path("kubelet"), "--cert-dir="+c.path("kubelet", "pki"),
		"--hostname-override="+NodeName, "--node-ip="+c.NodeIP.String(), c.v(),
	); err != nil {
		return err
	}
	return c.waitFor("kubelet", 2*time.Minute, func() bool {
		return httpOK(fmt.Sprintf("http://127.0.0.1:%d/healthz", kubeletHealthzPort))
	})
}

// StopKubelet kills the running cluster's kubelet (SIGKILL: the node is
// lost, its containers go on running), for tests of a lost node.
func StopKubelet(c Config) error {
	pid := c.pidOf("kubelet")
	if pid == 0 {
		return errors.New("no kubelet of this cluster is running")
	}
	killWait(pid, 0)
	return nil
}

// StartKubelet starts the kubelet of a running cluster again (after
// StopKubelet) and puts back the sysctls it sets at start.
func StartKubelet(c Config) error {
	if c.alive("kubelet") {
		return errors.New("kubelet is already running")
	}
	snap, err := loadSnapshot(c.path("snapshot.json"))
	if err != nil {
		return fmt.Errorf("no running cluster in %s: %w", c.StateDir, err)
	}
	b, err := os.ReadFile(c.path("node-ip"))
	if err != nil {
		return err
	}
	if c.NodeIP = net.ParseIP(strings.TrimSpace(string(b))); c.NodeIP == nil {
		return fmt.Errorf("%s: not an IP address", c.path("node-ip"))
	}
	if err := c.startKubelet(); err != nil {
		return err
	}
	// kubelet sets its sysctls early at start; give it a moment, then put
	// them back (Down does again).
	time.Sleep(2 * time.Second)
	return restoreSysctls(snap, sysctls[1:])
}

func (c Config) bin(name string) string { return filepath.Join(c.K8sBin, name) }

func (c Config) v() string { return fmt.Sprintf("--v=%d", c.Verbose) }

// client is a clientset with the admin kubeconfig.
func (c Config) client() (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, err
	}
	rc.Timeout = 5 * time.Second
	return kubernetes.NewForConfig(rc)
}

func (c Config) apiServerArgs() []string {
	return []string{
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdClientPort),
		"--bind-address=" + c.NodeIP.String(), "--advertise-address=" + c.NodeIP.String(),
		fmt.Sprintf("--secure-port=%d", APIServerPort),
		"--tls-cert-file=" + c.pki("apiserver.crt"), "--tls-private-key-file=" + c.pki("apiserver.key"),
		"--client-ca-file=" + c.pki("ca.crt"),
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc." + ClusterDomain,
		"--service-account-key-file=" + c.pki("sa.pub"), "--service-account-signing-key-file=" + c.pki("sa.key"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate=" + c.pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + c.pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + c.pki("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		// Webhooks behind a Service are called at the endpoint's address.
		"--enable-aggregator-routing=true",
		"--profiling=false",
		c.v(),
	}
}

func (c Config) writeConfig() error {
	if err := writePKI(c.path("pki"), c.NodeIP, NodeName); err != nil {
		return err
	}
	files := map[string]string{
		"kubeconfig":                       c.kubeconfig("admin"),
		"controller-manager.kubeconfig":    c.kubeconfig("controller-manager"),
		"scheduler.kubeconfig":             c.kubeconfig("scheduler"),
		"kube-proxy.kubeconfig":            c.kubeconfig("kube-proxy"),
		"kube-router.kubeconfig":           c.kubeconfig("kube-router"),
		"kubelet.kubeconfig":               c.kubeconfig("kubelet-client"),
		"containerd.toml":                  c.containerdConfig(),
		"cni/net.d/10-hubcredits.conflist": c.cniConfig(),
		"kubelet.yaml":                     c.kubeletConfig(),
		"kube-proxy.yaml":                  c.kubeProxyConfig(),
		"nftables.conf":                    nftRules(),
		"node-ip":                          c.NodeIP.String() + "\n",
		// Pods get no upstream nameserver: nothing may leave the machine.
		"resolv.conf": "# hubcredits-cluster: no upstream DNS\n",
	}
	for name, content := range files {
		if err := writeFile(c.path(name), content); err != nil {
			return err
		}
	}
	for _, d := range []string{"pod-logs", "kubelet-plugins", "cni/ipam", "containerd"} {
		if err := os.MkdirAll(c.path(d), 0o700); err != nil {
			return err
		}
	}
	return nil
}

func httpOK(url string) bool {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func restoreSysctls(s Snapshot, keys []string) error {
	for _, k := range keys {
		want, ok := s.Sysctls[k]
		if !ok {
			continue
		}
		if have, err := readSysctl(k); err == nil && have == want {
			continue
		}
		if err := writeSysctl(k, want); err != nil {
			return fmt.Errorf("restoring sysctl %s=%s: %w", k, want, err)
		}
	}
	return nil
}
