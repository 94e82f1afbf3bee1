package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// The repository root, from hack/tools/image.
var root = filepath.Join("..", "..", "..")

// The image under test: bin/image/layout as `make image` wrote it (make test
// runs make image first), or, when it is absent (go test here on its own),
// one built now from stand-in binaries, which checks everything but the
// binaries themselves.
type built struct {
	dir    string // the OCI layout
	real   bool   // from make image
	opts   Options
	idx    v1.ImageIndex
	tag    string
	bindir string // where make image left the per-platform binaries
}

func appVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "charts", "hubcredits", "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^appVersion:\s*"?([^"\s]+)"?`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no appVersion in Chart.yaml")
	}
	return string(m[1])
}

func standInOptions(t *testing.T, dir string) Options {
	t.Helper()
	bins := map[string]string{}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		f := filepath.Join(dir, strings.ReplaceAll(p, "/", "-"))
		if err := os.WriteFile(f, []byte("stand-in for "+p), 0o755); err != nil {
			t.Fatal(err)
		}
		bins[p] = f
	}
	return Options{
		Binaries: bins, CABundle: "/etc/ssl/certs/ca-certificates.crt",
		Created: time.Unix(1700000000, 0).UTC(), Source: "https://github.com/hubcredits/hubcredits",
		Version: appVersion(t), Revision: "0123456789abcdef", Licenses: "Apache-2.0",
	}
}

func load(t *testing.T) built {
	t.Helper()
	imgDir := filepath.Join(root, "bin", "image")
	dir := filepath.Join(imgDir, "layout")
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err == nil {
		p, err := layout.FromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		outer, err := p.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		m, err := outer.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Manifests) != 1 {
			t.Fatalf("%s/index.json: %d entries, want 1 (the tagged index)", dir, len(m.Manifests))
		}
		idx, err := outer.ImageIndex(m.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		return built{dir: dir, real: true, idx: idx, tag: m.Manifests[0].Annotations["org.opencontainers.image.ref.name"], bindir: imgDir}
	}
	t.Logf("%s absent (run make image): checking an image built from stand-in binaries", dir)
	tmp := t.TempDir()
	o := standInOptions(t, tmp)
	idx, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(tmp, "layout")
	if err := WriteLayout(dir, idx, "ghcr.io/hubcredits/hubcredits", o.Version); err != nil {
		t.Fatal(err)
	}
	return built{dir: dir, opts: o, idx: idx, tag: o.Version}
}

type file struct {
	hdr  *tar.Header
	data []byte
}

func files(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer func() { _ = rc.Close() }()
	out := map[string]file{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out["/"+strings.TrimSuffix(h.Name, "/")] = file{h, b}
	}
}

func TestImage(t *testing.T) {
	b := load(t)
	want := appVersion(t)
	if b.tag != want {
		t.Errorf("layout tag %q, want the chart's appVersion %q", b.tag, want)
	}
	im, err := b.idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("index media type %s", im.MediaType)
	}
	for _, k := range []string{"source", "version", "licenses", "revision", "created"} {
		if im.Annotations["org.opencontainers.image."+k] == "" {
			t.Errorf("index has no org.opencontainers.image.%s annotation", k)
		}
	}
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	seen := map[string]bool{}
	for _, d := range im.Manifests {
		if d.Platform == nil {
			t.Fatalf("manifest %s has no platform", d.Digest)
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		seen[p] = true
		img, err := b.idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if cf.OS+"/"+cf.Architecture != p {
			t.Errorf("%s: config says %s/%s", p, cf.OS, cf.Architecture)
		}
		if c.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532", p, c.User)
		}
		if len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/manager" || len(c.Cmd) != 0 {
			t.Errorf("%s: entrypoint %q cmd %q, want [/manager] and no cmd", p, c.Entrypoint, c.Cmd)
		}
		if c.WorkingDir != "/" {
			t.Errorf("%s: workdir %q", p, c.WorkingDir)
		}
		for _, k := range []string{"source", "version", "licenses", "revision", "created"} {
			if c.Labels["org.opencontainers.image."+k] == "" {
				t.Errorf("%s: no label org.opencontainers.image.%s", p, k)
			}
		}
		if v := c.Labels["org.opencontainers.image.version"]; v != want {
			t.Errorf("%s: version label %q, want %q", p, v, want)
		}
		if l := c.Labels["org.opencontainers.image.licenses"]; l != "Apache-2.0" {
			t.Errorf("%s: licenses label %q", p, l)
		}
		fs := files(t, img)
		pw := string(fs["/etc/passwd"].data)
		if !regexp.MustCompile(`(?m)^nonroot:x:65532:65532:[^:]*:/home/nonroot:`).MatchString(pw) {
			t.Errorf("%s: /etc/passwd has no nonroot 65532 entry:\n%s", p, pw)
		}
		if !regexp.MustCompile(`(?m)^nonroot:x:65532:`).MatchString(string(fs["/etc/group"].data)) {
			t.Errorf("%s: /etc/group has no nonroot 65532", p)
		}
		if ca := fs[CABundle]; !bytes.Contains(ca.data, []byte("-----BEGIN CERTIFICATE-----")) {
			t.Errorf("%s: no CA bundle at %s", p, CABundle)
		}
		if h := fs["/home/nonroot"].hdr; h == nil || h.Uid != 65532 {
			t.Errorf("%s: /home/nonroot missing or not owned by 65532", p)
		}
		if h := fs["/tmp"].hdr; h == nil || h.Mode&0o1777 != 0o1777 {
			t.Errorf("%s: /tmp missing or not 1777", p)
		}
		mgr := fs["/manager"]
		if mgr.hdr == nil || mgr.hdr.Mode&0o111 == 0 || mgr.hdr.Uid != 0 {
			t.Fatalf("%s: /manager missing, not executable or not root-owned", p)
		}
		for name, f := range fs {
			if !f.hdr.ModTime.Equal(cf.Created.Time) {
				t.Errorf("%s: %s mtime %s, want the image's created time %s", p, name, f.hdr.ModTime, cf.Created.Time)
			}
		}
		if !b.real {
			continue
		}
		e, err := elf.NewFile(bytes.NewReader(mgr.data))
		if err != nil {
			t.Fatalf("%s: /manager is not ELF: %v", p, err)
		}
		if e.Machine != machine[d.Platform.Architecture] {
			t.Errorf("%s: /manager is for %s", p, e.Machine)
		}
		for _, prog := range e.Progs {
			if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
				t.Errorf("%s: /manager is dynamically linked", p)
			}
		}
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		if !seen[p] {
			t.Errorf("index lacks %s (has %v)", p, seen)
		}
	}
	if b.real {
		arch := filepath.Join(b.bindir, "hubcredits-"+want+".oci.tar")
		names := tarNames(t, arch)
		for _, n := range []string{"oci-layout", "index.json"} {
			if !names[n] {
				t.Errorf("%s lacks %s", arch, n)
			}
		}
	}
}

func tarNames(t *testing.T, file string) map[string]bool {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	out := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = true
	}
}

// Building twice from the same inputs gives the same digest and the same
// archive bytes; and make image's output is what its binaries and metadata
// give when rebuilt now (nothing in it came from the clock or the disk's
// mtimes).
func TestReproducible(t *testing.T) {
	tmp := t.TempDir()
	o := standInOptions(t, tmp)
	var digests [2]v1.Hash
	var archives [2][]byte
	for i := range 2 {
		if i == 1 {
			// Different mtimes on the inputs must not matter.
			for _, f := range o.Binaries {
				if err := os.Chtimes(f, time.Now(), time.Now().Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
		}
		idx, err := Build(o)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(tmp, "layout")
		if err := WriteLayout(dir, idx, "ghcr.io/hubcredits/hubcredits", o.Version); err != nil {
			t.Fatal(err)
		}
		arch := filepath.Join(tmp, "a.tar")
		if err := WriteArchive(dir, arch, o.Created); err != nil {
			t.Fatal(err)
		}
		if digests[i], err = idx.Digest(); err != nil {
			t.Fatal(err)
		}
		if archives[i], err = os.ReadFile(arch); err != nil {
			t.Fatal(err)
		}
	}
	if digests[0] != digests[1] || !bytes.Equal(archives[0], archives[1]) {
		t.Fatalf("two builds differ: %s vs %s (archives equal: %v)", digests[0], digests[1], bytes.Equal(archives[0], archives[1]))
	}
	t.Logf("stand-in image digest %s, twice", digests[0])

	b := load(t)
	if !b.real {
		return
	}
	im, err := b.idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	a := im.Annotations
	created, err := time.Parse(time.RFC3339, a["org.opencontainers.image.created"])
	if err != nil {
		t.Fatal(err)
	}
	again := Options{
		Binaries: map[string]string{}, CABundle: filepath.Join(b.bindir, "ca-certificates.crt"), Created: created,
		Source: a["org.opencontainers.image.source"], Version: a["org.opencontainers.image.version"],
		Revision: a["org.opencontainers.image.revision"], Licenses: a["org.opencontainers.image.licenses"],
	}
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		again.Binaries[p] = filepath.Join(b.bindir, strings.ReplaceAll(p, "/", "-"), "manager")
	}
	idx, err := Build(again)
	if err != nil {
		t.Fatal(err)
	}
	d1, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d0, err := b.idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d0 != d1 {
		t.Fatalf("bin/image/layout is %s, rebuilt from the same binaries %s", d0, d1)
	}
	t.Logf("make image's index %s rebuilt identically", d0)
}

// The Dockerfile (for users with Docker) describes the same image: its final
// stage runs as the same user, in the same directory, with the same
// entrypoint, copies only to paths the image has, on a distroless nonroot
// base (which brings the same passwd entry and CA bundle path), with the
// same fixed labels.
func TestDockerfileAgrees(t *testing.T) {
	df := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	b := load(t)
	im, err := b.idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := b.idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	fs := files(t, img)

	if !regexp.MustCompile(`^gcr\.io/distroless/static[-\w]*:nonroot\b`).MatchString(df.from) {
		t.Errorf("Dockerfile's final stage is FROM %q; want distroless static :nonroot (passwd 65532, %s)", df.from, CABundle)
	}
	if df.user != cf.Config.User {
		t.Errorf("Dockerfile USER %q, image %q", df.user, cf.Config.User)
	}
	if df.workdir != cf.Config.WorkingDir {
		t.Errorf("Dockerfile WORKDIR %q, image %q (distroless :nonroot alone would give /home/nonroot)", df.workdir, cf.Config.WorkingDir)
	}
	if strings.Join(df.entrypoint, " ") != strings.Join(cf.Config.Entrypoint, " ") {
		t.Errorf("Dockerfile ENTRYPOINT %q, image %q", df.entrypoint, cf.Config.Entrypoint)
	}
	if len(df.copies) == 0 {
		t.Error("Dockerfile's final stage copies nothing")
	}
	for _, dst := range df.copies {
		if _, ok := fs[strings.TrimSuffix(dst, "/")]; !ok {
			t.Errorf("Dockerfile copies to %s, which the image does not have", dst)
		}
	}
	for _, k := range []string{"org.opencontainers.image.source", "org.opencontainers.image.licenses", "org.opencontainers.image.title"} {
		if df.labels[k] != cf.Config.Labels[k] {
			t.Errorf("label %s: Dockerfile %q, image %q", k, df.labels[k], cf.Config.Labels[k])
		}
	}
	if _, ok := df.labels["org.opencontainers.image.version"]; !ok {
		t.Error("Dockerfile sets no org.opencontainers.image.version label")
	}
}

type dockerfile struct {
	from, user, workdir string
	entrypoint, copies  []string
	labels              map[string]string
}

// parseDockerfile reads the instructions of the final stage (continuation
// lines joined, comments dropped).
func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var lines []string
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, cur+l)
		cur = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	for _, l := range lines {
		if l == "" {
			continue
		}
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			d = dockerfile{from: strings.Fields(rest)[0], labels: map[string]string{}}
		case "USER":
			d.user = rest
		case "WORKDIR":
			d.workdir = rest
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &d.entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT %s: want the exec (JSON) form: %v", rest, err)
			}
		case "COPY", "ADD":
			args := strings.Fields(rest)
			d.copies = append(d.copies, args[len(args)-1])
		case "LABEL":
			for _, m := range regexp.MustCompile(`([\w.-]+)=("[^"]*"|\S+)`).FindAllStringSubmatch(rest, -1) {
				d.labels[m[1]] = strings.Trim(m[2], `"`)
			}
		}
	}
	return d
}
