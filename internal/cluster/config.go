// Package cluster is make cluster: a real single-node Kubernetes on this
// machine, offline. etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kubelet and kube-proxy are built from the Go module proxy
// into bin/k8s; containerd, runc and the CNI plugins are Debian's. Every
// component keeps its state under one state directory (default .cluster):
// containerd has its own root, state and socket, kubelet its own root
// directory and pod-log directory, CNI its own configuration and IPAM data.
//
// Up records what the host looked like (Snapshot) before it changes
// anything, and Down puts back what the components changed (processes,
// mounts, cni0, cgroups, nftables tables, ip_forward and the sysctls
// kubelet sets) and then compares the host with that record: a teardown
// that leaves anything behind fails and says what.
//
// NetworkPolicies are enforced: kube-router's network policy controller
// (only that: no routing, no service proxy), built from the Go module
// proxy like the rest, runs as a host process and keeps iptables chains
// and ipsets for them. The bridge plugin's pod-to-pod traffic crosses
// iptables because net.bridge.bridge-nf-call-iptables is 1 while the
// cluster runs (Up sets it, Down puts it back).
//
// Traffic from pods and Services never leaves the machine: an nftables
// table drops anything from the pod network, or to the pod or Service
// networks, that would be forwarded or routed out of an interface other
// than cni0 and lo. Pods reach the host's own addresses (the API server,
// a hub on the host) and each other.
//
// This is test and development infrastructure (make cluster, make
// test-cluster); the operator binary never links it.
package cluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// The cluster's fixed networks and names.
const (
	PodCIDR      = "10.244.0.0/24"
	podSupernet  = "10.244.0.0/16"
	ServiceCIDR  = "10.96.0.0/12"
	apiServiceIP = "10.96.0.1"
	// DNSServiceIP is where kubelet points pods (ClusterFirst); a DNS server
	// is the cluster's own business (see test/cluster for the Z2JH tests').
	DNSServiceIP  = "10.96.0.10"
	ClusterDomain = "cluster.local"
	NodeName      = "hubcredits-node"
	bridgeName    = "cni0"
	nftTable      = "hubcredits_cluster"
	// PauseImage is the sandbox image containerd uses (test/images/pause).
	PauseImage = "localhost/hubcredits/pause:test"
)

// The ports the components listen on. The API server and kubelet listen on
// the node's address (pods reach them there); everything else on 127.0.0.1.
const (
	APIServerPort      = 6443
	etcdClientPort     = 12379
	etcdPeerPort       = 12380
	kubeletPort        = 10250
	kubeletHealthzPort = 10248
	controllerMgrPort  = 10257
	schedulerPort      = 10259
	proxyHealthzPort   = 10256
	proxyMetricsPort   = 10249
	// kube-router's health endpoint (it listens on every address).
	kubeRouterHealthPort = 20244
)

// kubeRouterUser is the user kube-router's client certificate names; Up
// binds it to a read-only ClusterRole.
const kubeRouterUser = "kube-router"

// Config says where the cluster's binaries and state are.
type Config struct {
	// StateDir holds everything the cluster writes (absolute).
	StateDir string
	// K8sBin holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet, kube-proxy and kubectl.
	K8sBin string
	// NodeIP is the node's address: the first global IPv4 address of an
	// interface that is up, unless set.
	NodeIP net.IP
	// Images are OCI archives imported into containerd before kubelet
	// starts (the pause image among them).
	Images []string
	// Verbose sets the components' -v.
	Verbose int
}

func (c Config) path(elem ...string) string {
	return filepath.Join(append([]string{c.StateDir}, elem...)...)
}

// Kubeconfig is the cluster-admin kubeconfig Up writes.
func (c Config) Kubeconfig() string { return c.path("kubeconfig") }

func (c Config) containerdSocket() string { return c.path("containerd", "containerd.sock") }
func (c Config) pki(name string) string   { return c.path("pki", name) }
func (c Config) apiURL() string {
	return fmt.Sprintf("https://%s", net.JoinHostPort(c.NodeIP.String(), fmt.Sprint(APIServerPort)))
}

// DefaultNodeIP is the first global unicast IPv4 address of an interface
// that is up and not a loopback or our bridge.
func DefaultNodeIP() (net.IP, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 || i.Name == bridgeName || strings.HasPrefix(i.Name, "veth") {
			continue
		}
		addrs, err := i.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
				return n.IP.To4(), nil
			}
		}
	}
	return nil, fmt.Errorf("no network interface with an IPv4 address: the API server must advertise one that is not loopback")
}

func writeFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(content), 0o600)
}

// kubeconfig for a component authenticating with pki/<cert>.
func (c Config) kubeconfig(cert string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: hubcredits-cluster
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: hubcredits-cluster
  context: {cluster: hubcredits-cluster, user: %s}
current-context: hubcredits-cluster
`, c.apiURL(), c.pki("ca.crt"), cert, c.pki(cert+".crt"), c.pki(cert+".key"), cert)
}

func (c Config) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # runc cannot write a negative oom_score_adj here (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, c.path("containerd", "root"), c.path("containerd", "state"), c.containerdSocket(), c.path("containerd", "ttrpc.sock"),
		PauseImage, c.path("containerd", "runc"), c.path("cni", "net.d"), c.path("containerd", "opt"))
}

func (c Config) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "hubcredits-cluster",
  "plugins": [{
    "type": "bridge",
    "bridge": %q,
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": %q}]],
      "routes": [{"dst": "0.0.0.0/0"}],
      "dataDir": %q
    }
  }]
}
`, bridgeName, PodCIDR, c.path("cni", "ipam"))
}

func (c Config) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization: {mode: Webhook}
tlsCertFile: %s
tlsPrivateKeyFile: %s
containerRuntimeEndpoint: unix://%s
# cgroups are v1 here (hybrid); containerd 1.6 lacks the RuntimeConfig RPC.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [%s]
clusterDomain: %s
resolvConf: %s
podLogsDir: %s
volumePluginDir: %s
# Secret volumes (the webhook's rotated certificate) refresh in seconds.
syncFrequency: 10s
# Images come from OCI archives, never from a registry: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
`, c.NodeIP, kubeletPort, kubeletHealthzPort, c.pki("ca.crt"), c.pki("kubelet.crt"), c.pki("kubelet.key"),
		c.containerdSocket(), DNSServiceIP, ClusterDomain, c.path("resolv.conf"), c.path("pod-logs"), c.path("kubelet-plugins"))
}

func (c Config) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
mode: nftables
clusterCIDR: %s
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:%d
metricsBindAddress: 127.0.0.1:%d
# Service traffic from a pod to a pod on the same bridge comes back
# through the host: masquerade it, so replies return the same way.
# NetworkPolicies still see the pod's own address: kube-router filters in
# FORWARD, after the Service's DNAT and before this masquerade.
nftables: {masqueradeAll: true}
iptables: {localhostNodePorts: false}
# No conntrack sysctls touched.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, c.path("kube-proxy.kubeconfig"), NodeName, podSupernet, proxyHealthzPort, proxyMetricsPort)
}

// nftRules keep pod and Service traffic on this machine: nothing from the
// pod network, or to the pod or Service networks, is forwarded or routed
// out of any interface but cni0 and lo. Pods still reach the host's own
// addresses (input, not forward) and one another.
func nftRules() string {
	return fmt.Sprintf(`table inet %[1]s {
	chain forward {
		type filter hook forward priority -10; policy accept;
		ip saddr %[2]s ip daddr != %[2]s drop
		ip daddr %[3]s drop
		meta nfproto ipv6 iifname %[4]q drop
	}
	chain postrouting {
		type filter hook postrouting priority -10; policy accept;
		oifname != { %[4]q, "lo" } ip saddr %[2]s drop
		oifname != { %[4]q, "lo" } ip daddr { %[2]s, %[3]s } drop
	}
}
`, nftTable, podSupernet, ServiceCIDR, bridgeName)
}
