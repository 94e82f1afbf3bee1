// Command pause is the pod sandbox ("pause") image of make cluster: it
// holds a pod's namespaces, reaps the zombies it inherits as PID 1 and
// exits on SIGINT or SIGTERM. Test infrastructure, built by
// hack/build-test-images.sh; a real cluster uses registry.k8s.io/pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
