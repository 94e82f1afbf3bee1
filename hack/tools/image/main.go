// Command image assembles the operator's OCI image from cross-compiled
// manager binaries, offline and reproducibly, with go-containerregistry:
// no base image is pulled, no Docker engine is needed.
//
// Each platform's image has two layers:
//
//  1. the distroless-style base, the same for every platform: /etc/passwd
//     and /etc/group with root, nobody and nonroot (65532), the CA bundle at
//     /etc/ssl/certs/ca-certificates.crt, /etc/nsswitch.conf, /home/nonroot
//     and /tmp;
//  2. the static binary at /manager.
//
// The config runs /manager as 65532:65532 in /, with the OCI labels
// (source, version, revision, licenses, created); the platform images are
// put in one OCI image index carrying the same annotations. Every time in
// the image (file mtimes, history, created) is -created (default
// $SOURCE_DATE_EPOCH), tar entries are written in a fixed order with fixed
// owners, and gzip has no header time, so the same inputs give the same
// digest.
//
// Output: an OCI image layout directory (-layout) and the same layout as a
// tar archive (-archive), its index tagged -tag (org.opencontainers.image.ref.name)
// and named -name:-tag for containerd (io.containerd.image.name).
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed facts; the Dockerfile describes the same ones
// (checked by TestDockerfileAgrees).
const (
	User        = "65532:65532"
	Entrypoint  = "/manager"
	WorkingDir  = "/"
	CABundle    = "/etc/ssl/certs/ca-certificates.crt"
	DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\n" +
		"nobody:x:65534:\n" +
		"nonroot:x:65532:\n"
	nsswitch = "hosts: files dns\n"
)

// Options are the inputs of one image build.
type Options struct {
	// Binaries maps a platform ("linux/amd64") to its static manager binary.
	Binaries map[string]string
	// CABundle is the host file copied to /etc/ssl/certs/ca-certificates.crt.
	CABundle string
	Created  time.Time
	Source   string
	Version  string
	Revision string
	Licenses string
	// Entrypoint is where each platform's binary goes and what the image
	// runs (default /manager: the operator). Test images (make cluster's
	// single-user stub and pause) set their own.
	Entrypoint string
	// Title and Description are the OCI title and description labels
	// (default: the operator's).
	Title       string
	Description string
}

func (o Options) entrypoint() string {
	if o.Entrypoint == "" {
		return Entrypoint
	}
	return o.Entrypoint
}

// Labels are the OCI labels (config) and annotations (manifests, index).
func (o Options) Labels() map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       orDefault(o.Title, "hubcredits"),
		"org.opencontainers.image.description": orDefault(o.Description, "Credit-based accounting of JupyterHub user servers on Kubernetes"),
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.url":         o.Source,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.licenses":    o.Licenses,
		"org.opencontainers.image.created":     o.Created.UTC().Format(time.RFC3339),
	}
	for k, v := range l {
		if v == "" {
			delete(l, k)
		}
	}
	return l
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

type entry struct {
	name string // without a leading slash; directories end in "/"
	mode int64
	uid  int
	data []byte
}

// layerFrom writes entries (sorted by name) as an uncompressed tar with
// every time set to t, and wraps it as a gzip-compressed OCI layer.
func layerFrom(entries []entry, t time.Time) (v1.Layer, error) {
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: t, Format: tar.FormatUSTAR}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
}

func baseLayer(caBundle []byte, t time.Time) (v1.Layer, error) {
	return layerFrom([]entry{
		{name: "etc/", mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte(nsswitch)},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: strings.TrimPrefix(CABundle, "/"), mode: 0o644, data: caBundle},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: 65532},
		{name: "tmp/", mode: 0o1777},
	}, t)
}

// binaryEntries is the binary at path with the directories above it (those
// the base layer does not already have).
func binaryEntries(path string, bin []byte) []entry {
	name := strings.TrimPrefix(path, "/")
	var es []entry
	for dir := filepath.Dir(name); dir != "." && dir != "/"; dir = filepath.Dir(dir) {
		es = append(es, entry{name: dir + "/", mode: 0o755})
	}
	return append(es, entry{name: name, mode: 0o755, data: bin})
}

// Build assembles the multi-platform image index.
func Build(o Options) (v1.ImageIndex, error) {
	if len(o.Binaries) == 0 {
		return nil, errors.New("no binaries: give at least one -platform os/arch=path")
	}
	ca, err := os.ReadFile(o.CABundle)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w (on Debian: apt-get install ca-certificates)", err)
	}
	created := v1.Time{Time: o.Created.UTC()}
	base, err := baseLayer(ca, o.Created)
	if err != nil {
		return nil, err
	}
	labels := o.Labels()

	platforms := make([]string, 0, len(o.Binaries))
	for p := range o.Binaries {
		platforms = append(platforms, p)
	}
	sort.Strings(platforms)

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		osName, arch, ok := strings.Cut(p, "/")
		if !ok || osName == "" || arch == "" {
			return nil, fmt.Errorf("platform %q: want os/arch", p)
		}
		bin, err := os.ReadFile(o.Binaries[p])
		if err != nil {
			return nil, fmt.Errorf("binary for %s: %w", p, err)
		}
		mgr, err := layerFrom(binaryEntries(o.entrypoint(), bin), o.Created)
		if err != nil {
			return nil, err
		}
		img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		img, err = mutate.Append(img,
			mutate.Addendum{Layer: base, History: v1.History{Created: created, CreatedBy: "hack/tools/image: passwd, group, nsswitch.conf, CA bundle, /home/nonroot, /tmp", Comment: "base"}},
			mutate.Addendum{Layer: mgr, History: v1.History{Created: created, CreatedBy: "hack/tools/image: COPY " + filepath.Base(o.entrypoint()) + " " + o.entrypoint()}},
		)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = osName, arch
		if arch == "arm64" {
			cf.Variant = "v8"
		}
		cf.Created = created
		cf.Author = "hubcredits"
		cf.Config = v1.Config{
			User:       User,
			Entrypoint: []string{o.entrypoint()},
			WorkingDir: WorkingDir,
			Env:        []string{DefaultPath, "SSL_CERT_FILE=" + CABundle},
			Labels:     labels,
		}
		img, err = mutate.ConfigFile(img, cf)
		if err != nil {
			return nil, err
		}
		img, ok = mutate.Annotations(img, labels).(v1.Image)
		if !ok {
			return nil, errors.New("annotated image is not an image")
		}
		plat := &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	out, ok := mutate.Annotations(idx, labels).(v1.ImageIndex)
	if !ok {
		return nil, errors.New("annotated index is not an index")
	}
	return out, nil
}

// WriteLayout writes idx as a fresh OCI image layout at dir (removed first),
// its entry in index.json annotated with the tag and, when name is set, the
// full reference containerd's import uses.
func WriteLayout(dir string, idx v1.ImageIndex, name, tag string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	ann := map[string]string{"org.opencontainers.image.ref.name": tag}
	if name != "" {
		ann["io.containerd.image.name"] = name + ":" + tag
	}
	return p.AppendIndex(idx, layout.WithAnnotations(ann))
}

// WriteArchive tars the layout at dir into file (an "OCI archive", as
// skopeo's oci-archive: transport reads it): sorted entries, fixed owner,
// mode and mtime.
func WriteArchive(dir, file string, t time.Time) error {
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	tmp := file + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp) }()
	tw := tar.NewWriter(f)
	for _, path := range names {
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: rel, Mode: 0o644, ModTime: t, Typeflag: tar.TypeReg, Size: st.Size(), Format: tar.FormatUSTAR}
		if st.IsDir() {
			h.Name, h.Mode, h.Typeflag, h.Size = rel+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("archive %s: %w", rel, err)
		}
		if !st.IsDir() {
			src, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, src)
			_ = src.Close()
			if err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

type platformFlag map[string]string

func (p platformFlag) String() string { return fmt.Sprint(map[string]string(p)) }
func (p platformFlag) Set(s string) error {
	plat, path, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q: want os/arch=path", s)
	}
	p[plat] = path
	return nil
}

func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

func main() {
	bins := platformFlag{}
	o := Options{}
	var layoutDir, archive, tag, name, digestFile string
	flag.Var(bins, "platform", "os/arch=path of the static binary for that platform (repeat)")
	flag.StringVar(&o.Entrypoint, "entrypoint", Entrypoint, "path of the binary in the image, and its entrypoint")
	flag.StringVar(&o.Title, "title", "hubcredits", "org.opencontainers.image.title")
	flag.StringVar(&o.Description, "description", "", "org.opencontainers.image.description (default: the operator's)")
	flag.StringVar(&o.CABundle, "ca", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to copy to "+CABundle)
	flag.StringVar(&o.Source, "source", "https://github.com/hubcredits/hubcredits", "org.opencontainers.image.source")
	flag.StringVar(&o.Version, "version", "", "org.opencontainers.image.version (the chart's appVersion)")
	flag.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision (git commit)")
	flag.StringVar(&o.Licenses, "licenses", "Apache-2.0", "org.opencontainers.image.licenses")
	flag.StringVar(&layoutDir, "layout", "bin/image/layout", "OCI image layout directory to write (replaced)")
	flag.StringVar(&archive, "archive", "", "OCI archive (tar of the layout) to write; none if empty")
	flag.StringVar(&tag, "tag", "", "tag of the index in the layout (default: -version)")
	flag.StringVar(&name, "name", "ghcr.io/hubcredits/hubcredits", "repository for io.containerd.image.name (name:tag)")
	flag.StringVar(&digestFile, "digest-file", "", "file to write the index digest to")
	flag.Parse()
	if err := run(o, bins, layoutDir, archive, tag, name, digestFile); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(o Options, bins platformFlag, layoutDir, archive, tag, name, digestFile string) error {
	created, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	o.Created, o.Binaries = created, bins
	if tag == "" {
		tag = o.Version
	}
	if tag == "" {
		return errors.New("no -tag and no -version")
	}
	idx, err := Build(o)
	if err != nil {
		return err
	}
	if err := WriteLayout(layoutDir, idx, name, tag); err != nil {
		return err
	}
	if archive != "" {
		if err := WriteArchive(layoutDir, archive, created); err != nil {
			return err
		}
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	if digestFile != "" {
		if err := os.WriteFile(digestFile, []byte(d.String()+"\n"), 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("%s:%s %s (%d platforms, created %s)\n", name, tag, d, len(bins), created.Format(time.RFC3339))
	return nil
}
