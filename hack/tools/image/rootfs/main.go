// Command rootfs turns a root filesystem directory (a debootstrap tree, say)
// into a single-layer, single-platform OCI image, offline, with
// go-containerregistry: the test images of make test-z2jh (hack/images/) are
// built this way. They are test infrastructure, never published.
//
// The layer is the tree as a tar: entries sorted by name, owners and modes
// as on disk (numeric ids only), every mtime clamped to -created (default
// $SOURCE_DATE_EPOCH), hard links kept, device nodes, sockets and FIFOs left
// out (the runtime provides /dev), gzip without a header time. So the same
// tree gives the same digest, whoever built it and when.
//
// Output: an OCI image layout directory (-layout) and the same layout as a
// tar archive (-archive) for `ctr images import`, named -name:-tag.
package main

import (
	"archive/tar"
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
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// Config is what the image's config says besides its layer.
type Config struct {
	Platform   string // os/arch
	User       string
	WorkingDir string
	Entrypoint []string
	Cmd        []string
	Env        []string
	Labels     map[string]string
	Created    time.Time
}

// WriteLayerTar writes the tree at root as an uncompressed tar to w.
func WriteLayerTar(root string, w io.Writer, clamp time.Time) error {
	var names []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != root {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	links := map[uint64]string{} // inode -> first name written
	for _, path := range names {
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		mode := fi.Mode()
		if mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeSocket|fs.ModeNamedPipe) != 0 {
			continue
		}
		target := ""
		if mode&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(path); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		h.Name = rel
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		h.Format = tar.FormatPAX
		if h.ModTime.After(clamp) {
			h.ModTime = clamp
		}
		h.ModTime = h.ModTime.Truncate(time.Second)
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && mode.IsRegular() && st.Nlink > 1 {
			if first, seen := links[st.Ino]; seen {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				links[st.Ino] = rel
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			_ = f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		}
	}
	return tw.Close()
}

// Image is the tree at root (written as a tar to layerFile) with cfg.
func Image(root, layerFile string, cfg Config) (v1.Image, error) {
	f, err := os.Create(layerFile)
	if err != nil {
		return nil, err
	}
	if err := WriteLayerTar(root, f, cfg.Created); err != nil {
		_ = f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromFile(layerFile, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: cfg.Created.UTC()}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{Created: created, CreatedBy: "hack/tools/image/rootfs " + filepath.Base(root)}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	osName, arch, ok := strings.Cut(cfg.Platform, "/")
	if !ok || osName == "" || arch == "" {
		return nil, fmt.Errorf("platform %q: want os/arch", cfg.Platform)
	}
	cf.OS, cf.Architecture, cf.Created, cf.Author = osName, arch, created, "hubcredits (test image)"
	cf.Config = v1.Config{User: cfg.User, WorkingDir: cfg.WorkingDir, Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd, Env: cfg.Env, Labels: cfg.Labels}
	return mutate.ConfigFile(img, cf)
}

// Write writes img as a fresh OCI layout at dir named name:tag, and that
// layout as a tar archive at archive.
func Write(img v1.Image, dir, archive, name, tag string, t time.Time) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	ann := map[string]string{"org.opencontainers.image.ref.name": tag, "io.containerd.image.name": name + ":" + tag}
	if err := p.AppendImage(img, layout.WithAnnotations(ann)); err != nil {
		return err
	}
	tmp := archive + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp) }()
	if err := WriteLayerTar(dir, f, t); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, archive)
}

func main() {
	var cfg Config
	var root, layoutDir, archive, name, tag, workDir string
	var entry, cmd, env, labels listFlag
	flag.StringVar(&root, "root", "", "root filesystem directory (required)")
	flag.StringVar(&cfg.Platform, "platform", "linux/amd64", "os/arch of the tree")
	flag.StringVar(&cfg.User, "user", "", "user[:group] the image runs as")
	flag.StringVar(&cfg.WorkingDir, "workdir", "/", "working directory")
	flag.Var(&entry, "entrypoint", "entrypoint argument (repeat)")
	flag.Var(&cmd, "cmd", "cmd argument (repeat)")
	flag.Var(&env, "env", "KEY=VALUE (repeat)")
	flag.Var(&labels, "label", "KEY=VALUE OCI label (repeat)")
	flag.StringVar(&name, "name", "", "repository for io.containerd.image.name (required)")
	flag.StringVar(&tag, "tag", "test", "tag")
	flag.StringVar(&layoutDir, "layout", "", "OCI image layout directory to write (replaced; required)")
	flag.StringVar(&archive, "archive", "", "OCI archive to write (required)")
	flag.StringVar(&workDir, "work", "", "directory for the uncompressed layer (default: beside -archive)")
	flag.Parse()
	if err := run(cfg, root, layoutDir, archive, name, tag, workDir, entry, cmd, env, labels); err != nil {
		fmt.Fprintln(os.Stderr, "rootfs:", err)
		os.Exit(1)
	}
}

func run(cfg Config, root, layoutDir, archive, name, tag, workDir string, entry, cmd, env, labels listFlag) error {
	if root == "" || layoutDir == "" || archive == "" || name == "" {
		return errors.New("-root, -layout, -archive and -name are required")
	}
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return fmt.Errorf("-root %s is not a directory", root)
	}
	cfg.Created = time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
		}
		cfg.Created = time.Unix(n, 0).UTC()
	}
	cfg.Entrypoint, cfg.Cmd, cfg.Env = entry, cmd, env
	cfg.Labels = map[string]string{"org.opencontainers.image.created": cfg.Created.Format(time.RFC3339)}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("-label %q: want KEY=VALUE", l)
		}
		cfg.Labels[k] = v
	}
	if workDir == "" {
		workDir = filepath.Dir(archive)
	}
	layerFile := filepath.Join(workDir, filepath.Base(archive)+".layer.tar")
	defer func() { _ = os.Remove(layerFile) }()
	img, err := Image(root, layerFile, cfg)
	if err != nil {
		return err
	}
	if err := Write(img, layoutDir, archive, name, tag, cfg.Created); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s:%s %s\n", name, tag, d)
	return nil
}
