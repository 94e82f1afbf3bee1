// Command coredns is CoreDNS with only the plugins make cluster's DNS needs,
// built the way CoreDNS documents for a chosen plugin set: a main that
// imports those plugins and sets dnsserver.Directives (their order is the
// one in CoreDNS's plugin.cfg). There is deliberately no forward (nor any
// other plugin that talks to the outside): the cluster answers for
// cluster.local and its reverse zones, nothing else, and no query ever
// leaves the machine.
//
// The Corefile is test/cluster/coredns.yaml's ConfigMap.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

// directives is CoreDNS's plugin.cfg order restricted to the plugins above.
var directives = []string{
	"ready",
	"health",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"kubernetes",
	"loop",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
