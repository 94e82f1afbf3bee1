package cluster

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// realNode skips unless test/cluster/run.sh asked for the real-node tests
// (root, the node built): they start components on this machine.
func realNode(t *testing.T) Config {
	t.Helper()
	if os.Getenv("HUBCREDITS_REAL_NODE") != "1" {
		t.Skip("starts a real node: run by test/cluster/run.sh (make test-cluster), which sets HUBCREDITS_REAL_NODE=1")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ip, err := DefaultNodeIP()
	if err != nil {
		t.Fatal(err)
	}
	// One real node at a time on a machine: another one's teardown would
	// look like a change of the host here.
	if _, err := os.Stat("/sys/fs/cgroup/memory/kubepods"); err == nil || checkPorts(ip) != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("another real node runs on this machine (kubepods cgroup or its ports)")
		}
		t.Skip("another real node runs on this machine (kubepods cgroup or its ports): not now")
	}
	return Config{
		StateDir: t.TempDir(),
		K8sBin:   filepath.Join(root, "bin", "k8s"),
		NodeIP:   ip,
		Images:   []string{filepath.Join(root, "bin", "image", "test", "pause.oci.tar")},
	}
}

// assertClean checks that nothing of the cluster is left: no snapshot (Up
// or Down removed it), and the host as a fresh snapshot finds it.
func assertClean(t *testing.T, c Config, before Snapshot) {
	t.Helper()
	if _, err := os.Stat(c.path("snapshot.json")); err == nil {
		t.Errorf("%s is left: a half-started cluster", c.path("snapshot.json"))
	}
	for _, name := range components {
		if c.alive(name) {
			t.Errorf("%s still runs", name)
		}
	}
	now, err := TakeSnapshot(c.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if d := now.Diff(before); len(d) > 0 {
		t.Errorf("the host changed: %q", d)
	}
}

func TestUpFaults(t *testing.T) {
	c := realNode(t)
	before, err := TakeSnapshot(c.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	up := func(c Config) (string, error) {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		err := Up(ctx, c, &out)
		return out.String(), err
	}

	t.Run("a port in use", func(t *testing.T) {
		l, err := net.Listen("tcp", net.JoinHostPort(c.NodeIP.String(), "6443"))
		if err != nil {
			t.Skipf("port 6443 is taken already: %v", err)
		}
		defer func() { _ = l.Close() }()
		_, err = up(c)
		if err == nil || !strings.Contains(err.Error(), "port 6443") || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("Up = %v, want one sentence naming port 6443 in use", err)
		}
		assertClean(t, c, before)
	})

	t.Run("a previous run's leftovers", func(t *testing.T) {
		if err := writeFile(c.path("snapshot.json"), "{}"); err != nil {
			t.Fatal(err)
		}
		_, err := up(c)
		if !errors.Is(err, ErrLeftovers) || !strings.Contains(err.Error(), "make cluster-down") {
			t.Fatalf("Up = %v, want the leftovers named, with make cluster-down", err)
		}
		_ = os.Remove(c.path("snapshot.json"))
	})

	t.Run("a failed image import", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "broken.oci.tar")
		if err := os.WriteFile(bad, []byte("not an OCI archive"), 0o600); err != nil {
			t.Fatal(err)
		}
		c := c
		c.Images = append([]string{bad}, c.Images...)
		out, err := up(c)
		if err == nil || !strings.Contains(err.Error(), "importing "+bad) {
			t.Fatalf("Up = %v, want the failed import named", err)
		}
		if !strings.Contains(out, "tearing down what was started") {
			t.Errorf("Up did not say it tore down:\n%s", out)
		}
		assertClean(t, c, before)
	})

	t.Run("a missing binary", func(t *testing.T) {
		c := c
		c.K8sBin = t.TempDir()
		_, err := up(c)
		if err == nil || !strings.Contains(err.Error(), "make node-tools") {
			t.Fatalf("Up = %v, want the missing binary named with make node-tools", err)
		}
		assertClean(t, c, before)
	})
}

func TestCheckFilesystems(t *testing.T) {
	if err := checkFilesystems("nodev\tsysfs\nnodev\toverlay\n"); err != nil {
		t.Errorf("overlay present: %v", err)
	}
	err := checkFilesystems("nodev\tsysfs\n\text4\n")
	if err == nil || !strings.Contains(err.Error(), "modprobe overlay") {
		t.Errorf("no overlay: %v, want one sentence with modprobe overlay", err)
	}
}
