// Command hubcredits-cluster is make cluster: a real single-node
// Kubernetes on this machine (internal/cluster), with the operator's image
// and the test images loaded into its containerd without any registry.
//
//	hubcredits-cluster up [--state-dir .cluster] [--detach] [--image FILE]...
//	hubcredits-cluster down [--state-dir .cluster]
//	hubcredits-cluster kubelet stop|start [--state-dir .cluster]
//
// up starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
// containerd, kubelet and kube-proxy, writes STATE/kubeconfig and, unless
// --detach, runs until Ctrl-C and then tears everything down, leaving the
// host as it found it. down tears down a cluster left by --detach or by a
// killed up. kubelet stop kills the node's kubelet (a lost node: its
// containers go on running) and kubelet start starts it again, for tests.
// All need root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hubcredits/hubcredits/internal/cluster"
)

type images []string

func (i *images) String() string     { return strings.Join(*i, ",") }
func (i *images) Set(s string) error { *i = append(*i, s); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hubcredits-cluster:", err)
		os.Exit(1)
	}
}

func usage() error {
	return errors.New("usage: hubcredits-cluster up|down [flags] (hubcredits-cluster up --help)")
}

func run(args []string) error {
	if len(args) == 0 {
		return usage()
	}
	sub := args[0]
	if sub == "kubelet" {
		if len(args) < 2 || (args[1] != "stop" && args[1] != "start") {
			return errors.New("usage: hubcredits-cluster kubelet stop|start [--state-dir DIR]")
		}
		sub, args = "kubelet "+args[1], args[1:]
	}
	fs := flag.NewFlagSet("hubcredits-cluster "+sub, flag.ContinueOnError)
	stateDir := fs.String("state-dir", ".cluster", "Directory for everything the cluster writes (kubeconfig, certificates, containerd, kubelet, logs).")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	k8sBin := fs.String("k8s-bin", filepath.Join(filepath.Dir(self), "k8s"), "Directory with etcd and the Kubernetes binaries (make node-tools).")
	var imgs images
	var detach, install bool
	var nodeIP string
	var verbose int
	if sub == "up" {
		fs.Var(&imgs, "image", "OCI archive to import into containerd (repeat); the pause image must be among them.")
		fs.BoolVar(&detach, "detach", false, "Return once the cluster is up and leave it running (stop it with `hubcredits-cluster down`).")
		fs.BoolVar(&install, "install-packages", true, "Install the Debian packages the node needs when they are missing.")
		fs.StringVar(&nodeIP, "node-ip", "", "The node's address (default: the first global IPv4 address of an interface that is up).")
		fs.IntVar(&verbose, "v", 1, "The components' log level.")
	} else if sub != "down" && sub != "kubelet stop" && sub != "kubelet start" {
		return usage()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	abs, err := filepath.Abs(*stateDir)
	if err != nil {
		return err
	}
	c := cluster.Config{StateDir: abs, K8sBin: *k8sBin, Images: imgs, Verbose: verbose}
	if os.Geteuid() != 0 {
		return errors.New("a real node runs containers and changes the network: run it as root")
	}
	switch sub {
	case "down":
		return cluster.Down(c, os.Stdout)
	case "kubelet stop":
		return cluster.StopKubelet(c)
	case "kubelet start":
		return cluster.StartKubelet(c)
	}

	if err := cluster.CheckHost(install); err != nil {
		return err
	}
	if nodeIP != "" {
		if c.NodeIP = net.ParseIP(nodeIP).To4(); c.NodeIP == nil {
			return fmt.Errorf("--node-ip %q is not an IPv4 address", nodeIP)
		}
	} else if c.NodeIP, err = cluster.DefaultNodeIP(); err != nil {
		return err
	}

	// A signal during the start is taken as "stop": Up tears down.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	fmt.Printf("hubcredits-cluster: starting a real node on %s (state in %s)\n", c.NodeIP, c.StateDir)
	if err := cluster.Up(ctx, c, os.Stdout); err != nil {
		return err
	}
	fmt.Printf(`hubcredits-cluster: node %s Ready after %.0fs.
  export KUBECONFIG=%s PATH=$PWD/bin/k8s:$PATH
  kubectl get nodes
  helm install hubcredits charts/hubcredits -n jhub --create-namespace   (docs/install.md)
Pods use imagePullPolicy: Never or IfNotPresent: the images are the ones loaded here.
`, cluster.NodeName, time.Since(start).Seconds(), c.Kubeconfig())
	if detach {
		fmt.Println("Stop it with: make cluster-down")
		return nil
	}
	fmt.Println("Ctrl-C stops the cluster and puts the host back as it was.")
	<-ctx.Done()
	stop()
	fmt.Println()
	return cluster.Down(c, os.Stdout)
}
