// Package billing is hubcredits' domain core: prices and the policies that
// set them, billing periods, who pays for a server (the wallet, and the
// project pool that pays first), the pinned-price annotations, what a pod's
// run times say, and the ledger arithmetic of reserving, charging and
// refunding. Both the admission webhook and the controllers call it; it
// imports only the API types and apimachinery, never controller-runtime or
// a client, so every rule here is a pure function with table tests.
package billing
