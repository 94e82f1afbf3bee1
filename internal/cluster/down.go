package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// components in the order Down stops them: first what makes or uses pods,
// then containerd (after its pods are removed), then the control plane.
var components = []string{"kubelet", "kube-router", "kube-proxy", "kube-scheduler", "kube-controller-manager", "containerd", "kube-apiserver", "etcd"}

// Down stops the cluster whose state is in c.StateDir (running, or left by
// a killed Up) and puts the host back as Up found it; it fails, naming each
// difference, when the host is not. It is safe to run twice.
func Down(c Config, out io.Writer) error {
	unlock, err := lock(5 * time.Minute)
	if err != nil {
		return err
	}
	defer unlock()
	return down(c, out)
}

func down(c Config, out io.Writer) error {
	snap, err := loadSnapshot(c.path("snapshot.json"))
	if errors.Is(err, os.ErrNotExist) {
		// Nothing was changed by a cluster in this state directory (Up
		// records the host before it touches it), or Down already ran.
		fmt.Fprintf(out, "hubcredits-cluster: no cluster state in %s; nothing to tear down\n", c.StateDir)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", c.path("snapshot.json"), err)
	}
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	for _, name := range components {
		if name == "containerd" && c.alive("containerd") {
			// Pods first: CRI stops their containers and CNI gives back
			// their addresses and veths.
			note(c.removePods())
		}
		c.stop(name, 15*time.Second)
	}
	c.killShims()
	note(c.killPodProcesses())

	if _, err := os.Stat(c.bin("kube-proxy")); err == nil {
		if b, err := exec.Command(c.bin("kube-proxy"), "--cleanup").CombinedOutput(); err != nil {
			note(fmt.Errorf("kube-proxy --cleanup: %w: %s", err, lastLine(b)))
		}
	}
	note(deleteNFTable("inet", nftTable))
	note(removeKubeRouterChains())
	note(removeKubeletChains(snap))
	note(removeKubeRouterIPSets(snap))

	// CRI's network namespaces, then every mount under the state directory.
	if ns, err := filepath.Glob("/run/netns/cni-*"); err == nil {
		for _, n := range ns {
			_ = syscall.Unmount(n, syscall.MNT_DETACH)
			note(ignoreNotExist(os.Remove(n)))
		}
	}
	ms, err := mountsUnder(c.StateDir)
	note(err)
	for _, m := range ms {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			note(fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if ms, err := mountsUnder("/run/containerd"); err == nil {
		for _, m := range ms {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}

	if _, err := os.Stat("/sys/class/net/" + bridgeName); err == nil && !contains(snap.Links, bridgeName) {
		if b, err := exec.Command("ip", "link", "delete", bridgeName).CombinedOutput(); err != nil {
			note(fmt.Errorf("ip link delete %s: %w: %s", bridgeName, err, lastLine(b)))
		}
	}
	note(removeCgroups(snap))
	note(restoreSysctls(snap, append(append([]string{}, sysctls...), bridgeSysctl)))
	for p, existed := range snap.Paths {
		if !existed {
			note(ignoreNotExist(os.RemoveAll(p)))
		}
	}

	now, err := TakeSnapshot(c.StateDir)
	note(err)
	if err == nil {
		for _, d := range now.Diff(snap) {
			errs = append(errs, errors.New(d))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("the host is not as the cluster found it (state kept in %s; run `make cluster-down` again after fixing): %w", c.StateDir, errors.Join(errs...))
	}
	// Keep the logs for a post-mortem; everything else goes.
	ents, err := os.ReadDir(c.StateDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() != "logs" && e.Name() != "logs.previous" {
			if err := os.RemoveAll(c.path(e.Name())); err != nil {
				return fmt.Errorf("removing %s: %w", c.path(e.Name()), err)
			}
		}
	}
	fmt.Fprintf(out, "hubcredits-cluster: stopped; the host is as it was (logs kept in %s)\n", c.path("logs"))
	return nil
}

// removePods stops and removes every pod sandbox through CRI.
func (c Config) removePods() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+c.containerdSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("listing pod sandboxes: %w", err)
	}
	var errs []error
	for _, s := range list.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stopping sandbox of %s/%s: %w", s.Metadata.GetNamespace(), s.Metadata.GetName(), err))
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("removing sandbox of %s/%s: %w", s.Metadata.GetNamespace(), s.Metadata.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// killShims kills containerd-shim processes of this cluster's containerd
// (left when containerd was killed before its pods were removed).
func (c Config) killShims() {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmd := string(b)
		if strings.Contains(cmd, "containerd-shim") && strings.Contains(cmd, c.containerdSocket()) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				killWait(pid, 5*time.Second)
			}
		}
	}
}

// kubepodsDirs are the kubepods cgroup trees of every hierarchy.
func kubepodsDirs() []string {
	var ds []string
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, r := range roots {
		d := filepath.Join(r, "kubepods")
		if _, err := os.Stat(d); err == nil {
			ds = append(ds, d)
		}
		d = filepath.Join(r, "kubepods.slice")
		if _, err := os.Stat(d); err == nil {
			ds = append(ds, d)
		}
	}
	return ds
}

// killPodProcesses kills whatever still runs in the kubepods cgroups (a
// container whose shim was killed).
func (c Config) killPodProcesses() error {
	for range 50 {
		var pids []int
		for _, d := range kubepodsDirs() {
			_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
				if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
					return nil //nolint:nilerr // a cgroup that vanished has no processes left
				}
				b, _ := os.ReadFile(p)
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						pids = append(pids, pid)
					}
				}
				return nil
			})
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("processes are still running in the kubepods cgroups")
}

// removeCgroups removes the cgroups kubelet made (deepest first), in every
// hierarchy, unless they existed before.
func removeCgroups(snap Snapshot) error {
	var errs []error
	for _, d := range kubepodsDirs() {
		if contains(snap.Cgroups, d) {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, x := range dirs {
			var err error
			for range 20 {
				if err = syscall.Rmdir(x); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", x, err))
			}
		}
	}
	return errors.Join(errs...)
}

func deleteNFTable(family, name string) error {
	if err := exec.Command("nft", "list", "table", family, name).Run(); err != nil {
		return nil //nolint:nilerr // no such table: nothing to delete
	}
	if b, err := exec.Command("nft", "delete", "table", family, name).CombinedOutput(); err != nil {
		return fmt.Errorf("nft delete table %s %s: %w: %s", family, name, err, lastLine(b))
	}
	return nil
}

// removeKubeletChains deletes the canary chains kubelet makes in iptables'
// tables (KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY, KUBE-FIREWALL...), and
// the tables themselves when they did not exist before.
func removeKubeletChains(snap Snapshot) error {
	tables, err := nftTables()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tables {
		if contains(snap.NFTables, t) {
			continue
		}
		family, name, _ := strings.Cut(t, " ")
		errs = append(errs, deleteNFTable(family, name))
	}
	return errors.Join(errs...)
}

// removeKubeRouterChains takes kube-router's chains, and the rules that
// jump to them, out of iptables' filter table (rewriting the table with
// iptables-restore; a table the cluster made is deleted after, whole).
func removeKubeRouterChains() error {
	chains, err := kubeRouterChains()
	if err != nil || len(chains) == 0 {
		return err
	}
	saved, err := exec.Command("iptables-save", "-t", "filter").Output()
	if err != nil {
		return fmt.Errorf("iptables-save -t filter: %w", err)
	}
	var keep []string
	for _, l := range strings.Split(string(saved), "\n") {
		ours := false
		for _, p := range kubeRouterChainPrefixes {
			if strings.Contains(l, p) {
				ours = true
			}
		}
		if !ours {
			keep = append(keep, l)
		}
	}
	restore := exec.Command("iptables-restore", "-w", "5")
	restore.Stdin = strings.NewReader(strings.Join(keep, "\n"))
	if b, err := restore.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore without kube-router's chains: %w: %s", err, lastLine(b))
	}
	return nil
}

// removeKubeRouterIPSets destroys kube-router's ipsets that were not there
// before (after the rules that use them are gone).
func removeKubeRouterIPSets(snap Snapshot) error {
	sets, err := ipsets()
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range sets {
		if !hasAnyPrefix(s, kubeRouterIPSetPrefixes) || contains(snap.IPSets, s) {
			continue
		}
		if b, err := exec.Command("ipset", "destroy", s).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ipset destroy %s: %w: %s", s, err, lastLine(b)))
		}
	}
	return errors.Join(errs...)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func ignoreNotExist(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func lastLine(b []byte) string {
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	return ls[len(ls)-1]
}
