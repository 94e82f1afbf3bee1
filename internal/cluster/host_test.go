package cluster

import (
	"reflect"
	"strings"
	"testing"
)

func TestSnapshotDiff(t *testing.T) {
	base := Snapshot{
		Sysctls:        map[string]string{"net/ipv4/ip_forward": "0", "kernel/panic": "0", bridgeSysctl: "0"},
		Paths:          map[string]bool{"/run/containerd": false, "/var/log/containers": true},
		Links:          []string{"eth0", "lo"},
		NFTables:       []string{"inet filter"},
		Cgroups:        []string{"/sys/fs/cgroup/memory/system.slice"},
		Mounts:         []string{"/", "/proc"},
		IPTablesChains: []string{"DOCKER"},
		IPSets:         []string{"blocklist"},
	}
	clone := func(f func(*Snapshot)) Snapshot {
		s := Snapshot{Sysctls: map[string]string{}, Paths: map[string]bool{}}
		for k, v := range base.Sysctls {
			s.Sysctls[k] = v
		}
		for k, v := range base.Paths {
			s.Paths[k] = v
		}
		s.Links = append([]string(nil), base.Links...)
		s.NFTables = append([]string(nil), base.NFTables...)
		s.Cgroups = append([]string(nil), base.Cgroups...)
		s.Mounts = append([]string(nil), base.Mounts...)
		s.IPTablesChains = append([]string(nil), base.IPTablesChains...)
		s.IPSets = append([]string(nil), base.IPSets...)
		f(&s)
		return s
	}
	for _, tc := range []struct {
		name string
		now  Snapshot
		want []string
	}{
		{"the same", clone(func(*Snapshot) {}), nil},
		{"forwarding left on", clone(func(s *Snapshot) { s.Sysctls["net/ipv4/ip_forward"] = "1" }), []string{"sysctl net.ipv4.ip_forward is 1, was 0"}},
		{"containerd's run dir left", clone(func(s *Snapshot) { s.Paths["/run/containerd"] = true }), []string{"/run/containerd was created"}},
		{"a path that was there is gone", clone(func(s *Snapshot) { s.Paths["/var/log/containers"] = false }), []string{"/var/log/containers is gone"}},
		{"the bridge and a veth left", clone(func(s *Snapshot) { s.Links = append(s.Links, "cni0", "veth1234", "docker0") }), []string{"network interface cni0 is left", "network interface veth1234 is left"}},
		{"bridged traffic left crossing iptables", clone(func(s *Snapshot) { s.Sysctls[bridgeSysctl] = "1" }), []string{"sysctl net.bridge.bridge-nf-call-iptables is 1, was 0"}},
		{"kube-router's chains left, another's not ours", clone(func(s *Snapshot) {
			s.IPTablesChains = append(s.IPTablesChains, "KUBE-ROUTER-FORWARD", "KUBE-POD-FW-ABCDEF", "KUBE-NWPLCY-XYZ", "CILIUM_INPUT")
		}), []string{"iptables chain KUBE-NWPLCY-XYZ is left", "iptables chain KUBE-POD-FW-ABCDEF is left", "iptables chain KUBE-ROUTER-FORWARD is left"}},
		{"kube-router's ipsets left, another's not ours", clone(func(s *Snapshot) {
			s.IPSets = append(s.IPSets, "KUBE-SRC-ABC", "KUBE-DST-DEF", "kube-router-pod-subnets", "fail2ban")
		}), []string{"ipset KUBE-DST-DEF is left", "ipset KUBE-SRC-ABC is left", "ipset kube-router-pod-subnets is left"}},
		{"kube-proxy's table left", clone(func(s *Snapshot) { s.NFTables = append(s.NFTables, "ip kube-proxy") }), []string{"nftables table ip kube-proxy is left"}},
		{"kubepods cgroups left, others not ours", clone(func(s *Snapshot) {
			s.Cgroups = append(s.Cgroups, "/sys/fs/cgroup/memory/kubepods", "/sys/fs/cgroup/memory/user.slice")
		}), []string{"cgroup /sys/fs/cgroup/memory/kubepods is left"}},
		{"a netns mount left, a build's chroot mount not ours", clone(func(s *Snapshot) {
			s.Mounts = append(s.Mounts, "/run/netns/cni-1", "/work/build/rootfs/proc")
		}), []string{"mount /run/netns/cni-1 is left"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.now.Diff(base); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Diff = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNFTRulesKeepPodTrafficLocal(t *testing.T) {
	r := nftRules()
	for _, want := range []string{
		"table inet " + nftTable,
		"ip saddr 10.244.0.0/16 ip daddr != 10.244.0.0/16 drop",
		"ip daddr 10.96.0.0/12 drop",
		`oifname != { "cni0", "lo" } ip saddr 10.244.0.0/16 drop`,
		`oifname != { "cni0", "lo" } ip daddr { 10.244.0.0/16, 10.96.0.0/12 } drop`,
	} {
		if !strings.Contains(r, want) {
			t.Errorf("nftables rules lack %q:\n%s", want, r)
		}
	}
}

func TestDiskNeed(t *testing.T) {
	const mib = 1 << 20
	// The images make cluster loads today: about 225 MiB of archives.
	need := diskNeed(225 * mib)
	if need != 225*3*mib+1024*mib {
		t.Fatalf("diskNeed(225 MiB) = %d MiB", need/mib)
	}
	for _, tc := range []struct {
		free, need uint64
		ok         bool
	}{
		{free: need, need: need, ok: true},
		{free: need - 1, need: need, ok: false},
		{free: 287 * mib, need: need, ok: false},
		{free: 49 << 30, need: need, ok: true},
	} {
		err := diskEnough(tc.free, tc.need, "/state")
		if (err == nil) != tc.ok {
			t.Errorf("diskEnough(%d MiB free, %d MiB needed) = %v", tc.free/mib, tc.need/mib, err)
		}
		if err != nil && !strings.Contains(err.Error(), "MiB free on the filesystem of /state") {
			t.Errorf("unclear error: %v", err)
		}
	}
}
