// Command chartcheck compares the rendered Helm chart (or kustomize build)
// with the files controller-gen generates, for hack/helm-test.sh:
//
//	chartcheck rbac RENDERED config/rbac/role.yaml [-subset] [-names FROM=TO,...]
//	    The rules of the rendered objects annotated hubcredits.io/rules-from
//	    (together, when several Roles are) equal (with -subset: are among)
//	    role.yaml's, kind by kind, after renaming role.yaml's resourceNames
//	    (the flags' defaults) with -names; and no Role or ClusterRole
//	    anywhere in RENDERED holds a "*".
//	chartcheck webhooks RENDERED config/webhook/manifests.yaml -hub NS -operator NS
//	    Every generated webhook is rendered with the same path, rules and
//	    side effects, points at a rendered Service whose port reaches the
//	    operator's webhook port, and is scoped: the pod webhook to
//	    component=singleuser-server pods, both to the hub namespace only and
//	    never kube-system or the operator's namespace (when it differs).
//	chartcheck flags RENDERED main.go
//	    Every flag passed to the operator container is defined in main.go.
//	chartcheck hardening RENDERED
//	    The operator Deployment is hardened (non-root, read-only root
//	    filesystem, seccomp RuntimeDefault, no capabilities, no privilege
//	    escalation, resource requests), elects a leader, serves without
//	    HTTP/2, may reach the hub under Z2JH's NetworkPolicy, and with more
//	    than one replica has anti-affinity and a PodDisruptionBudget.
//	chartcheck select RENDERED -drop Kind,Kind
//	    Prints RENDERED without the objects of the given kinds.
//
// It prints one line per problem and exits 1 when there is any.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

type obj = map[string]any

var problems []string

func problem(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: chartcheck rbac|webhooks|flags ...")
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	subset := fs.Bool("subset", false, "rbac: the rendered rules may be a subset of role.yaml's")
	hub := fs.String("hub", "", "webhooks: the hub namespace")
	operatorNS := fs.String("operator", "", "webhooks: the operator's namespace")
	drop := fs.String("drop", "", "select: comma-separated kinds to leave out")
	names := fs.String("names", "", "rbac: comma-separated FROM=TO renames of role.yaml's resourceNames")
	var pos []string
	for len(args) > 0 {
		_ = fs.Parse(args)
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	if (cmd == "select" || cmd == "hardening") && len(pos) == 1 {
		pos = append(pos, "") // one file only
	}
	if len(pos) != 2 {
		fmt.Fprintf(os.Stderr, "chartcheck %s: want 2 files, got %v\n", cmd, pos)
		os.Exit(2)
	}
	rendered := mustLoad(pos[0])
	switch cmd {
	case "rbac":
		rename := map[string]string{}
		for _, kv := range strings.Split(*names, ",") {
			if from, to, ok := strings.Cut(kv, "="); ok {
				rename[from] = to
			}
		}
		checkRBAC(rendered, mustLoad(pos[1]), *subset, rename)
	case "webhooks":
		if *hub == "" || *operatorNS == "" {
			fmt.Fprintln(os.Stderr, "chartcheck webhooks: -hub and -operator are required")
			os.Exit(2)
		}
		checkWebhooks(rendered, mustLoad(pos[1]), *hub, *operatorNS)
	case "flags":
		src, err := os.ReadFile(pos[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		checkFlags(rendered, string(src))
	case "hardening":
		checkHardening(rendered)
	case "select":
		dropped := set(strings.Split(*drop, ","))
		for _, o := range rendered {
			if dropped[str(o, "kind")] {
				continue
			}
			b, err := yaml.Marshal(o)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			fmt.Printf("---\n%s", b)
		}
	default:
		fmt.Fprintf(os.Stderr, "chartcheck: unknown command %q\n", cmd)
		os.Exit(2)
	}
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
}

// mustLoad reads a multi-document YAML file ("-" is stdin).
func mustLoad(path string) []obj {
	var data []byte
	var err error
	if path == "-" {
		var b bytes.Buffer
		_, err = b.ReadFrom(os.Stdin)
		data = b.Bytes()
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var out []obj
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var o obj
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(2)
		}
		if o != nil {
			out = append(out, o)
		}
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// get walks a path of map keys and list indexes.
func get(o any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := o.(map[string]any)
			if !ok {
				return nil
			}
			o = m[k]
		case int:
			l, ok := o.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			o = l[k]
		}
	}
	return o
}

func str(o any, path ...any) string { s, _ := get(o, path...).(string); return s }

func list(o any, path ...any) []any { l, _ := get(o, path...).([]any); return l }

func strs(o any, path ...any) []string {
	var out []string
	for _, v := range list(o, path...) {
		out = append(out, fmt.Sprint(v))
	}
	return out
}

func name(o obj) string { return str(o, "kind") + "/" + str(o, "metadata", "name") }

// normRule is a rule with its lists sorted, as one comparable string, its
// resourceNames renamed.
func normRule(r any, rename map[string]string) string {
	var parts []string
	for _, k := range []string{"apiGroups", "resources", "resourceNames", "nonResourceURLs", "verbs"} {
		v := strs(r, k)
		if k == "resourceNames" {
			for i, n := range v {
				if to, ok := rename[n]; ok {
					v[i] = to
				}
			}
		}
		sort.Strings(v)
		parts = append(parts, k+"="+strings.Join(v, ","))
	}
	return strings.Join(parts, " ")
}

func checkRBAC(rendered, role []obj, subset bool, rename map[string]string) {
	want := map[string][]string{} // kind -> normalized rules
	for _, o := range role {
		k := str(o, "kind")
		if k != "ClusterRole" && k != "Role" {
			continue
		}
		for _, r := range list(o, "rules") {
			want[k] = append(want[k], normRule(r, rename))
		}
	}
	got := map[string][]string{}
	for _, o := range rendered {
		k := str(o, "kind")
		if k != "ClusterRole" && k != "Role" {
			continue
		}
		for _, r := range list(o, "rules") {
			for _, f := range []string{"apiGroups", "resources", "resourceNames", "nonResourceURLs", "verbs"} {
				for _, v := range strs(r, f) {
					if strings.Contains(v, "*") {
						problem("%s: wildcard %q in %s", name(o), v, f)
					}
				}
			}
		}
		if str(o, "metadata", "annotations", "hubcredits.io/rules-from") == "" {
			continue
		}
		for _, r := range list(o, "rules") {
			got[k] = append(got[k], normRule(r, nil))
		}
	}
	kinds := map[string]bool{}
	for k := range want {
		kinds[k] = true
	}
	for k := range got {
		kinds[k] = true
	}
	for k := range kinds {
		w, g := set(want[k]), set(got[k])
		for r := range g {
			if !w[r] {
				problem("%s rule not in config/rbac/role.yaml: %s", k, r)
			}
		}
		if subset {
			continue
		}
		for r := range w {
			if !g[r] {
				problem("%s rule of config/rbac/role.yaml missing from the chart: %s", k, r)
			}
		}
	}
}

func set(l []string) map[string]bool {
	m := map[string]bool{}
	for _, s := range l {
		m[s] = true
	}
	return m
}

func checkWebhooks(rendered, generated []obj, hub, operatorNS string) {
	type hook struct {
		kind string
		cfg  obj
		w    any
	}
	find := func(objs []obj, kind, webhook string) []hook {
		var out []hook
		for _, o := range objs {
			if str(o, "kind") != kind {
				continue
			}
			for _, w := range list(o, "webhooks") {
				if str(w, "name") == webhook {
					out = append(out, hook{kind, o, w})
				}
			}
		}
		return out
	}
	n := 0
	for _, g := range generated {
		kind := str(g, "kind")
		if kind != "MutatingWebhookConfiguration" && kind != "ValidatingWebhookConfiguration" {
			continue
		}
		for _, gw := range list(g, "webhooks") {
			n++
			wn := str(gw, "name")
			hs := find(rendered, kind, wn)
			if len(hs) != 1 {
				problem("%s webhook %s: rendered %d times, want once", kind, wn, len(hs))
				continue
			}
			rw := hs[0].w
			where := name(hs[0].cfg) + " webhook " + wn
			for _, f := range []string{"sideEffects", "matchPolicy", "reinvocationPolicy"} {
				if gv := str(gw, f); gv != "" && str(rw, f) != gv {
					problem("%s: %s is %q, generated %q", where, f, str(rw, f), gv)
				}
			}
			if !reflect.DeepEqual(get(rw, "rules"), get(gw, "rules")) {
				problem("%s: rules %v differ from the generated %v", where, get(rw, "rules"), get(gw, "rules"))
			}
			if !reflect.DeepEqual(get(rw, "admissionReviewVersions"), get(gw, "admissionReviewVersions")) {
				problem("%s: admissionReviewVersions differ from the generated ones", where)
			}
			if p, gp := str(rw, "clientConfig", "service", "path"), str(gw, "clientConfig", "service", "path"); p != gp {
				problem("%s: path %q, generated %q", where, p, gp)
			}
			if fp := str(rw, "failurePolicy"); fp != "Fail" && fp != "Ignore" {
				problem("%s: failurePolicy %q", where, fp)
			}
			checkService(rendered, rw, where)
			checkNamespaces(rw, where, hub, operatorNS)
			if kind == "MutatingWebhookConfiguration" && wn == "pods.hubcredits.io" {
				checkPodHook(rw, where)
			}
			if kind == "ValidatingWebhookConfiguration" && wn == "pod-updates.hubcredits.io" {
				checkPodGuard(rw, where)
			}
		}
	}
	if n == 0 {
		problem("no webhooks in the generated manifests")
	}
}

// checkService follows clientConfig.service to the rendered Service and on to
// the operator container's webhook port.
func checkService(rendered []obj, w any, where string) {
	svcName, svcNS := str(w, "clientConfig", "service", "name"), str(w, "clientConfig", "service", "namespace")
	port := 443
	if p, ok := get(w, "clientConfig", "service", "port").(float64); ok {
		port = int(p)
	}
	var svc obj
	for _, o := range rendered {
		if str(o, "kind") == "Service" && str(o, "metadata", "name") == svcName && str(o, "metadata", "namespace") == svcNS {
			svc = o
		}
	}
	if svc == nil {
		problem("%s: Service %s/%s is not rendered", where, svcNS, svcName)
		return
	}
	var target any
	for _, p := range list(svc, "spec", "ports") {
		if v, _ := get(p, "port").(float64); int(v) == port {
			target = get(p, "targetPort")
			if target == nil {
				target = v
			}
		}
	}
	if target == nil {
		problem("%s: Service %s has no port %d", where, svcName, port)
		return
	}
	sel, _ := get(svc, "spec", "selector").(map[string]any)
	for _, o := range rendered {
		if str(o, "kind") != "Deployment" {
			continue
		}
		labels, _ := get(o, "spec", "template", "metadata", "labels").(map[string]any)
		if len(sel) == 0 || !matches(sel, labels) {
			continue
		}
		for _, c := range list(o, "spec", "template", "spec", "containers") {
			for _, p := range list(c, "ports") {
				if get(p, "name") == target || get(p, "containerPort") == target {
					cp := int(get(p, "containerPort").(float64))
					want := 9443
					for _, a := range strs(c, "args") {
						if v, ok := strings.CutPrefix(a, "--webhook-port="); ok {
							_, _ = fmt.Sscan(v, &want) // unparsable: keep the default
						}
					}
					if cp != want {
						problem("%s: Service port %d reaches container port %d, but the operator listens on %d", where, port, cp, want)
					}
					return
				}
			}
		}
	}
	problem("%s: Service %s port %d (target %v) reaches no operator container port", where, svcName, port, target)
}

func matches(sel, labels map[string]any) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func checkNamespaces(w any, where, hub, operatorNS string) {
	var in, notIn []string
	for _, e := range list(w, "namespaceSelector", "matchExpressions") {
		if str(e, "key") != "kubernetes.io/metadata.name" {
			continue
		}
		switch str(e, "operator") {
		case "In":
			in = append(in, strs(e, "values")...)
		case "NotIn":
			notIn = append(notIn, strs(e, "values")...)
		}
	}
	if len(list(w, "namespaceSelector", "matchExpressions")) == 0 && get(w, "namespaceSelector", "matchLabels") == nil {
		problem("%s: no namespaceSelector", where)
	}
	if len(in) > 0 && !reflect.DeepEqual(in, []string{hub}) {
		problem("%s: namespaceSelector selects %v, want only the hub namespace %s", where, in, hub)
	}
	if len(in) == 0 && !(hub == operatorNS && set(notIn)["kube-system"]) {
		// kustomize: the operator runs in the hub namespace, so NotIn
		// kube-system plus In [hub] is expected; with no In, require it.
		problem("%s: namespaceSelector has no 'kubernetes.io/metadata.name In [%s]'", where, hub)
	}
	if !set(notIn)["kube-system"] {
		problem("%s: namespaceSelector does not exclude kube-system", where)
	}
	if operatorNS != hub && !set(notIn)[operatorNS] {
		problem("%s: namespaceSelector does not exclude the operator's namespace %s", where, operatorNS)
	}
	if set(in)["kube-system"] {
		problem("%s: namespaceSelector selects kube-system", where)
	}
}

func checkPodHook(w any, where string) {
	if v := str(w, "objectSelector", "matchLabels", "component"); v != "singleuser-server" {
		problem("%s: objectSelector component=%q, want singleuser-server", where, v)
	}
	if t, _ := get(w, "timeoutSeconds").(float64); t < 1 || t > 2 {
		problem("%s: timeoutSeconds %v, want 1-2 (KubeSpawner's pod create times out after 3 s)", where, get(w, "timeoutSeconds"))
	}
	if se := str(w, "sideEffects"); se != "NoneOnDryRun" {
		problem("%s: sideEffects %q, want NoneOnDryRun", where, se)
	}
	for _, r := range list(w, "rules") {
		if !reflect.DeepEqual(strs(r, "operations"), []string{"CREATE"}) || !reflect.DeepEqual(strs(r, "resources"), []string{"pods"}) {
			problem("%s: rule %v, want CREATE of pods only", where, r)
		}
	}
}

// checkPodGuard: the pod update guard sees only singleuser pods, and only
// their updates (never creates, never status writes).
func checkPodGuard(w any, where string) {
	if v := str(w, "objectSelector", "matchLabels", "component"); v != "singleuser-server" {
		problem("%s: objectSelector component=%q, want singleuser-server", where, v)
	}
	if se := str(w, "sideEffects"); se != "None" {
		problem("%s: sideEffects %q, want None", where, se)
	}
	for _, r := range list(w, "rules") {
		if !reflect.DeepEqual(strs(r, "operations"), []string{"UPDATE"}) || !reflect.DeepEqual(strs(r, "resources"), []string{"pods"}) {
			problem("%s: rule %v, want UPDATE of pods only", where, r)
		}
	}
}

var zapFlags = map[string]bool{"zap-devel": true, "zap-encoder": true, "zap-log-level": true, "zap-stacktrace-level": true, "zap-time-encoding": true}

func checkFlags(rendered []obj, mainGo string) {
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`fs\.\w+Var\([^,]+,\s*"([^"]+)"`).FindAllStringSubmatch(mainGo, -1) {
		defined[m[1]] = true
	}
	if len(defined) == 0 {
		problem("no flags found in main.go (fs.XxxVar(&..., \"name\", ...))")
	}
	n := 0
	for _, o := range rendered {
		if str(o, "kind") != "Deployment" {
			continue
		}
		for _, c := range list(o, "spec", "template", "spec", "containers") {
			for _, a := range strs(c, "args") {
				if !strings.HasPrefix(a, "--") {
					problem("%s: argument %q is not a --flag", name(o), a)
					continue
				}
				n++
				f, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if !defined[f] && !zapFlags[f] {
					problem("%s: flag --%s is not defined in main.go", name(o), f)
				}
			}
		}
	}
	if n == 0 {
		problem("no operator flags rendered")
	}
}

func checkHardening(rendered []obj) {
	n := 0
	for _, d := range rendered {
		if str(d, "kind") != "Deployment" {
			continue
		}
		n++
		where := name(d)
		pod := get(d, "spec", "template", "spec")
		if get(pod, "securityContext", "runAsNonRoot") != true {
			problem("%s: pod securityContext.runAsNonRoot is not true", where)
		}
		if str(pod, "securityContext", "seccompProfile", "type") != "RuntimeDefault" {
			problem("%s: pod seccompProfile is not RuntimeDefault", where)
		}
		labels, _ := get(d, "spec", "template", "metadata", "labels").(map[string]any)
		if labels["hub.jupyter.org/network-access-hub"] != "true" {
			problem("%s: pods lack the label hub.jupyter.org/network-access-hub: \"true\" (Z2JH's hub NetworkPolicy)", where)
		}
		if labels["component"] == "singleuser-server" {
			problem("%s: the operator's pods are labelled component=singleuser-server", where)
		}
		for _, c := range list(pod, "containers") {
			cw := where + " container " + str(c, "name")
			sc := get(c, "securityContext")
			if get(sc, "readOnlyRootFilesystem") != true {
				problem("%s: readOnlyRootFilesystem is not true", cw)
			}
			if get(sc, "allowPrivilegeEscalation") != false {
				problem("%s: allowPrivilegeEscalation is not false", cw)
			}
			if !reflect.DeepEqual(strs(sc, "capabilities", "drop"), []string{"ALL"}) {
				problem("%s: capabilities.drop is not [ALL]", cw)
			}
			if get(c, "resources", "requests") == nil {
				problem("%s: no resource requests", cw)
			}
			args := set(strs(c, "args"))
			for _, a := range []string{"--leader-elect", "--enable-http2=false"} {
				if !args[a] {
					problem("%s: missing %s", cw, a)
				}
			}
		}
		replicas, _ := get(d, "spec", "replicas").(float64)
		if replicas <= 1 {
			continue
		}
		if get(pod, "affinity", "podAntiAffinity") == nil {
			problem("%s: %v replicas without pod anti-affinity", where, replicas)
		}
		pdb := false
		for _, p := range rendered {
			sel, _ := get(p, "spec", "selector", "matchLabels").(map[string]any)
			if str(p, "kind") == "PodDisruptionBudget" && len(sel) > 0 && matches(sel, labels) {
				pdb = true
			}
		}
		if !pdb {
			problem("%s: %v replicas without a PodDisruptionBudget", where, replicas)
		}
	}
	if n != 1 {
		problem("%d Deployments rendered, want 1", n)
	}
}
