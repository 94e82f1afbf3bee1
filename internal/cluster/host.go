package cluster

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// sysctls are the host settings the cluster's components change: the
// bridge plugin turns on forwarding; kubelet sets the other three once at
// start (it is put back right after).
var sysctls = []string{
	"net/ipv4/ip_forward",
	"vm/overcommit_memory",
	"kernel/panic",
	"kernel/panic_on_oops",
}

// bridgeSysctl makes bridged pod-to-pod traffic cross iptables, where
// kube-router enforces NetworkPolicies; Up sets it to 1, Down puts it
// back. It exists only with br_netfilter loaded.
const bridgeSysctl = "net/bridge/bridge-nf-call-iptables"

// kubeRouterChainPrefixes name the iptables chains of kube-router's network
// policy controller; kubeRouterIPSetPrefixes its ipsets.
var (
	kubeRouterChainPrefixes = []string{"KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-"}
	kubeRouterIPSetPrefixes = []string{"KUBE-SRC-", "KUBE-DST-", "kube-router-"}
)

// hostPaths are the host directories a component may create outside the
// state directory (containerd's shim sockets, CRI's network namespaces,
// libcni's cache, kubelet's container-log links).
var hostPaths = []string{
	"/run/containerd",
	"/run/netns",
	"/var/run/netns",
	"/var/lib/cni",
	"/var/log/containers",
	"/var/log/pods",
	"/var/lib/kubelet",
	"/etc/cni",
	"/opt/cni",
	"/usr/libexec/kubernetes",
}

// Snapshot is what Up found on the host, and what Down must leave.
type Snapshot struct {
	Sysctls map[string]string `json:"sysctls"`
	// Paths says which of hostPaths existed.
	Paths map[string]bool `json:"paths"`
	// Links are the network interfaces by name.
	Links []string `json:"links"`
	// NFTables are the nftables tables ("family name").
	NFTables []string `json:"nftables"`
	// Cgroups are the top-level cgroup directories of every hierarchy.
	Cgroups []string `json:"cgroups"`
	// Mounts are the mount points outside the state directory.
	Mounts []string `json:"mounts"`
	// IPTablesChains are the chains of iptables' filter table.
	IPTablesChains []string `json:"iptablesChains"`
	// IPSets are the kernel's ipsets by name.
	IPSets []string `json:"ipsets"`
}

// TakeSnapshot reads the host's state the cluster may change; mounts under
// stateDir are the cluster's own and not recorded.
func TakeSnapshot(stateDir string) (Snapshot, error) {
	s := Snapshot{Sysctls: map[string]string{}, Paths: map[string]bool{}}
	for _, k := range sysctls {
		v, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			return s, err
		}
		s.Sysctls[k] = strings.TrimSpace(string(v))
	}
	if v, err := readSysctl(bridgeSysctl); err == nil {
		s.Sysctls[bridgeSysctl] = v
	}
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		s.Paths[p] = err == nil
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return s, err
	}
	for _, i := range ifs {
		s.Links = append(s.Links, i.Name)
	}
	sort.Strings(s.Links)
	if s.NFTables, err = nftTables(); err != nil {
		return s, err
	}
	if s.Cgroups, err = topCgroups(); err != nil {
		return s, err
	}
	if s.Mounts, err = mountPoints(stateDir); err != nil {
		return s, err
	}
	if s.IPTablesChains, err = iptablesChains(); err != nil {
		return s, err
	}
	if s.IPSets, err = ipsets(); err != nil {
		return s, err
	}
	return s, nil
}

// Diff lists what differs from want in s, one sentence each.
func (s Snapshot) Diff(want Snapshot) []string {
	var out []string
	for k, v := range want.Sysctls {
		if s.Sysctls[k] != v {
			out = append(out, fmt.Sprintf("sysctl %s is %s, was %s", strings.ReplaceAll(k, "/", "."), s.Sysctls[k], v))
		}
	}
	for p, existed := range want.Paths {
		if s.Paths[p] != existed {
			if existed {
				out = append(out, p+" is gone")
			} else {
				out = append(out, p+" was created")
			}
		}
	}
	// Only what the cluster's components make is compared: other work on
	// the machine (a build's chroot mounts, say) may change the rest.
	for _, d := range []struct {
		what      string
		now, then []string
		ours      func(string) bool
	}{
		{"network interface", s.Links, want.Links, func(l string) bool { return l == bridgeName || strings.HasPrefix(l, "veth") }},
		{"nftables table", s.NFTables, want.NFTables, func(string) bool { return true }},
		{"iptables chain", s.IPTablesChains, want.IPTablesChains, func(c string) bool { return hasAnyPrefix(c, kubeRouterChainPrefixes) }},
		{"ipset", s.IPSets, want.IPSets, func(n string) bool { return hasAnyPrefix(n, kubeRouterIPSetPrefixes) }},
		{"cgroup", s.Cgroups, want.Cgroups, func(c string) bool { return strings.HasPrefix(filepath.Base(c), "kubepods") }},
		{"mount", s.Mounts, want.Mounts, func(m string) bool {
			for _, p := range componentMountDirs {
				if under(m, p) {
					return true
				}
			}
			return false
		}},
	} {
		added, removed := setDiff(filter(d.now, d.ours), filter(d.then, d.ours))
		for _, a := range added {
			out = append(out, fmt.Sprintf("%s %s is left", d.what, a))
		}
		for _, r := range removed {
			out = append(out, fmt.Sprintf("%s %s is gone", d.what, r))
		}
	}
	sort.Strings(out)
	return out
}

// componentMountDirs are where containerd, CRI, CNI and kubelet mount
// outside the state directory.
var componentMountDirs = []string{"/run/netns", "/var/run/netns", "/run/containerd", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/cni", "/var/log", "/sys/fs/cgroup"}

func filter(xs []string, keep func(string) bool) []string {
	var out []string
	for _, x := range xs {
		if keep(x) {
			out = append(out, x)
		}
	}
	return out
}

func setDiff(now, then []string) (added, removed []string) {
	in := func(xs []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	n, t := in(now), in(then)
	for x := range n {
		if !t[x] {
			added = append(added, x)
		}
	}
	for x := range t {
		if !n[x] {
			removed = append(removed, x)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	return added, removed
}

func (s Snapshot) save(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(path, string(b)+"\n")
}

func loadSnapshot(path string) (Snapshot, error) {
	var s Snapshot
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// iptablesChains lists the user chains of iptables' filter table (listing
// does not create the table).
func iptablesChains() ([]string, error) {
	out, err := exec.Command("iptables", "-w", "5", "-t", "filter", "-S").Output()
	if err != nil {
		return nil, fmt.Errorf("iptables -t filter -S: %w", err)
	}
	var cs []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "-N" {
			cs = append(cs, f[1])
		}
	}
	sort.Strings(cs)
	return cs, nil
}

// kubeRouterChains are the filter table's chains of kube-router.
func kubeRouterChains() ([]string, error) {
	cs, err := iptablesChains()
	return filter(cs, func(c string) bool { return hasAnyPrefix(c, kubeRouterChainPrefixes) }), err
}

// ipsets lists the kernel's ipsets by name.
func ipsets() ([]string, error) {
	out, err := exec.Command("ipset", "list", "-n").Output()
	if err != nil {
		return nil, fmt.Errorf("ipset list -n (apt-get install ipset): %w", err)
	}
	ns := strings.Fields(string(out))
	sort.Strings(ns)
	return ns, nil
}

func nftTables() ([]string, error) {
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return nil, fmt.Errorf("nft list tables: %w", err)
	}
	var ts []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l = strings.TrimSpace(strings.TrimPrefix(l, "table ")); l != "" {
			ts = append(ts, l)
		}
	}
	sort.Strings(ts)
	return ts, nil
}

// topCgroups lists the first two levels of every cgroup hierarchy (kubelet
// makes kubepods/ and kubepods/{burstable,besteffort}).
func topCgroups() ([]string, error) {
	roots, err := filepath.Glob("/sys/fs/cgroup/*")
	if err != nil {
		return nil, err
	}
	var cg []string
	for _, r := range roots {
		ents, err := os.ReadDir(r)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				cg = append(cg, filepath.Join(r, e.Name()))
			}
		}
	}
	sort.Strings(cg)
	return cg, nil
}

// mountPoints lists mount points from /proc/self/mountinfo, except those
// under stateDir (the cluster's own).
func mountPoints(stateDir string) ([]string, error) {
	all, err := allMounts()
	if err != nil {
		return nil, err
	}
	ms := filter(all, func(mp string) bool { return stateDir == "" || !under(mp, stateDir) })
	sort.Strings(ms)
	return ms, nil
}

// mountsUnder lists mount points at or under dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	all, err := allMounts()
	if err != nil {
		return nil, err
	}
	ms := filter(all, func(mp string) bool { return under(mp, dir) })
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms, nil
}

func under(path, dir string) bool { return path == dir || strings.HasPrefix(path, dir+"/") }

// allMounts reads the mount points of /proc/self/mountinfo.
func allMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var ms []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 5 {
			ms = append(ms, unescapeMount(fields[4]))
		}
	}
	return ms, sc.Err()
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// Packages are the Debian packages make cluster needs.
var Packages = []string{"containerd", "runc", "containernetworking-plugins", "conntrack", "iptables", "ipset", "nftables", "iproute2"}

// CheckHost says, in one sentence, what this machine lacks for a real
// node; installs the missing Debian packages first when install is set
// and this process is root.
func CheckHost(install bool) error {
	if os.Geteuid() != 0 {
		return errors.New("make cluster runs containers and changes the network: run it as root")
	}
	var missing []string
	for _, p := range Packages {
		if exec.Command("dpkg", "-s", p).Run() != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		if !install {
			return fmt.Errorf("missing Debian packages; run: apt-get install %s", strings.Join(missing, " "))
		}
		fmt.Printf(">>> Installing Debian packages for the real node: %s\n", strings.Join(missing, " "))
		upd := exec.Command("apt-get", "update", "-qq")
		upd.Stdout, upd.Stderr = os.Stdout, os.Stderr
		if err := upd.Run(); err != nil {
			return fmt.Errorf("apt-get update: %w", err)
		}
		inst := exec.Command("apt-get", append([]string{"install", "-y", "-qq"}, missing...)...)
		inst.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		inst.Stdout, inst.Stderr = os.Stdout, os.Stderr
		if err := inst.Run(); err != nil {
			return fmt.Errorf("apt-get install %s: %w", strings.Join(missing, " "), err)
		}
	}
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return err
	}
	if err := checkFilesystems(string(fs)); err != nil {
		return err
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err != nil {
		if _, err2 := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err2 != nil {
			return errors.New("no cgroup hierarchy with the memory controller under /sys/fs/cgroup: kubelet cannot run pods")
		}
	}
	for _, b := range []string{"/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("no CNI plugin at %s: apt-get install containernetworking-plugins", b)
		}
	}
	if err := exec.Command("nft", "list", "tables").Run(); err != nil {
		return fmt.Errorf("nftables does not work here (nft list tables: %w): the cluster cannot keep pod traffic on this machine", err)
	}
	return nil
}

// checkFilesystems says what /proc/filesystems lacks, in one sentence.
func checkFilesystems(procFilesystems string) error {
	for _, l := range strings.Split(procFilesystems, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == "overlay" {
			return nil
		}
	}
	return errors.New("the kernel has no overlay filesystem (containerd's snapshotter needs it): modprobe overlay")
}

// checkPorts says which of the cluster's ports is taken, in one sentence.
func checkPorts(nodeIP net.IP) error {
	for _, p := range []struct {
		ip   string
		port int
		who  string
	}{
		{nodeIP.String(), APIServerPort, "kube-apiserver"},
		{nodeIP.String(), kubeletPort, "kubelet"},
		{"127.0.0.1", etcdClientPort, "etcd"},
		{"127.0.0.1", etcdPeerPort, "etcd (peer)"},
		{"127.0.0.1", kubeletHealthzPort, "kubelet (healthz)"},
		{"127.0.0.1", controllerMgrPort, "kube-controller-manager"},
		{"127.0.0.1", schedulerPort, "kube-scheduler"},
		{"127.0.0.1", proxyHealthzPort, "kube-proxy (healthz)"},
		{"127.0.0.1", proxyMetricsPort, "kube-proxy (metrics)"},
		{"0.0.0.0", kubeRouterHealthPort, "kube-router (health)"},
	} {
		l, err := net.Listen("tcp", net.JoinHostPort(p.ip, fmt.Sprint(p.port)))
		if err != nil {
			return fmt.Errorf("port %d on %s (for %s) is in use: stop what listens there (ss -ltnp 'sport = :%d')", p.port, p.ip, p.who, p.port)
		}
		_ = l.Close()
	}
	return nil
}

func readSysctl(k string) (string, error) {
	v, err := os.ReadFile(filepath.Join("/proc/sys", k))
	return strings.TrimSpace(string(v)), err
}

func writeSysctl(k, v string) error {
	return os.WriteFile(filepath.Join("/proc/sys", k), []byte(v+"\n"), 0o644)
}

// diskNeed is the free space a node needs on the state directory's
// filesystem: containerd keeps each image archive's blobs and unpacks
// them (about twice the archive again), plus 1 GiB for etcd, the
// components' logs, pod logs and the containers' writable layers.
func diskNeed(imageBytes int64) uint64 {
	return uint64(3*imageBytes) + 1<<30
}

// checkDisk fails, in one sentence, when the state directory's filesystem
// has less free space than the node needs: a full disk makes components
// die without a line in their logs.
func (c Config) checkDisk() error {
	var images int64
	for _, img := range c.Images {
		if fi, err := os.Stat(img); err == nil {
			images += fi.Size()
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(c.StateDir, &fs); err != nil {
		return fmt.Errorf("reading the free space of %s: %w", c.StateDir, err)
	}
	return diskEnough(fs.Bavail*uint64(fs.Bsize), diskNeed(images), c.StateDir)
}

func diskEnough(free, need uint64, dir string) error {
	if free < need {
		return fmt.Errorf("only %d MiB free on the filesystem of %s; the node needs about %d MiB (the images unpacked into containerd, etcd, logs): free some space", free>>20, dir, need>>20)
	}
	return nil
}
