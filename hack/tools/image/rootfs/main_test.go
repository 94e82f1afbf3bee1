package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// tree makes a small root filesystem: a directory, a file, a hard link to
// it, a symlink, a FIFO (left out of the layer), all with mtimes in 2030.
func tree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(os.WriteFile(filepath.Join(root, "usr/bin/python3"), []byte("#!python"), 0o755))
	must(os.Link(filepath.Join(root, "usr/bin/python3"), filepath.Join(root, "usr/bin/python3.11")))
	must(os.Symlink("python3", filepath.Join(root, "usr/bin/python")))
	must(syscall.Mkfifo(filepath.Join(root, "usr/fifo"), 0o644))
	future := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, p := range []string{"usr/bin/python3", "usr/bin", "usr"} {
		must(os.Chtimes(filepath.Join(root, p), future, future))
	}
	return root
}

func layer(t *testing.T, root string, clamp time.Time) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteLayerTar(root, &b, clamp); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestLayerIsDeterministicClampedAndComplete(t *testing.T) {
	root := tree(t)
	clamp := time.Unix(1_700_000_000, 0).UTC()
	a, b := layer(t, root, clamp), layer(t, root, clamp)
	if !bytes.Equal(a, b) {
		t.Fatal("two layers of the same tree differ")
	}
	got := map[string]*tar.Header{}
	var order []string
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name], order = h, append(order, h.Name)
		if h.ModTime.After(clamp) {
			t.Errorf("%s: mtime %s after the clamp %s", h.Name, h.ModTime, clamp)
		}
		if h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner names %q/%q, want numeric ids only", h.Name, h.Uname, h.Gname)
		}
	}
	want := []string{"usr/", "usr/bin/", "usr/bin/python", "usr/bin/python3", "usr/bin/python3.11"}
	if len(order) != len(want) {
		t.Fatalf("entries %v, want %v (the FIFO left out)", order, want)
	}
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("entries %v, want %v", order, want)
		}
	}
	if h := got["usr/bin/python"]; h.Typeflag != tar.TypeSymlink || h.Linkname != "python3" {
		t.Errorf("symlink: %+v", h)
	}
	if h := got["usr/bin/python3.11"]; h.Typeflag != tar.TypeLink || h.Linkname != "usr/bin/python3" {
		t.Errorf("hard link: type %c -> %q", h.Typeflag, h.Linkname)
	}
	if h := got["usr/bin/python3"]; h.Typeflag != tar.TypeReg || h.Size != int64(len("#!python")) || h.Mode&0o111 == 0 {
		t.Errorf("file: %+v", h)
	}
}

func TestImageConfigAndArchive(t *testing.T) {
	root := tree(t)
	dir := t.TempDir()
	cfg := Config{Platform: "linux/amd64", User: "1000:1000", WorkingDir: "/srv/jupyterhub",
		Entrypoint: []string{"tini", "--"}, Cmd: []string{"jupyterhub"}, Env: []string{"LANG=C.UTF-8"},
		Created: time.Unix(1_700_000_000, 0).UTC()}
	img, err := Image(root, filepath.Join(dir, "layer.tar"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || cf.Config.User != "1000:1000" ||
		cf.Config.WorkingDir != "/srv/jupyterhub" || len(cf.Config.Entrypoint) != 2 || cf.Config.Cmd[0] != "jupyterhub" {
		t.Errorf("config: %+v %+v", cf, cf.Config)
	}
	again, err := Image(root, filepath.Join(dir, "layer2.tar"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("the same tree gave two digests: %s %s", d1, d2)
	}
	archive := filepath.Join(dir, "img.oci.tar")
	if err := Write(img, filepath.Join(dir, "layout"), archive, "localhost/x", "test", cfg.Created); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(archive); err != nil || st.Size() == 0 {
		t.Fatalf("archive: %v", err)
	}
	if _, err := Image(root, filepath.Join(dir, "l3.tar"), Config{Platform: "amd64"}); err == nil {
		t.Error("a platform without os/ was accepted")
	}
}
