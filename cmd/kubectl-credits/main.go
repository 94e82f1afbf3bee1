// Command kubectl-credits is the admin's kubectl plugin for hubcredits:
// `kubectl credits status|why|top-up|usage`. Install it by putting the
// binary on PATH (kubectl finds plugins by their kubectl- prefix).
package main

import (
	"os"

	"github.com/hubcredits/hubcredits/internal/creditscli"
)

func main() {
	os.Exit(creditscli.Run(os.Args[1:], creditscli.StdStreams()))
}
