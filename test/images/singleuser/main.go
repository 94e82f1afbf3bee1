// Command singleuser is the single-user server image of make cluster's
// tests: a small HTTP server that starts the way KubeSpawner starts
// jupyterhub-singleuser and answers where the Hub and the proxy look for a
// Jupyter server, so a real JupyterHub sees its spawn succeed and the pod
// really runs. It is test infrastructure, not a notebook server.
//
// It listens on JUPYTERHUB_SERVICE_URL's host:port (JupyterHub ≥ 2 sets
// it), overridden by --ip/--port in its arguments (KubeSpawner passes
// them), and serves under JUPYTERHUB_SERVICE_PREFIX:
//
//	GET {prefix}           a page naming the user (HTML)
//	GET {prefix}api        {"version": ...} as jupyter_server does
//	GET {prefix}api/status {"started": ..., "last_activity": ...}
//
// Every response carries X-JupyterHub-Version, as jupyterhub-singleuser's do.
//
// A first argument "jupyterhub-singleuser" (Z2JH's singleuser.cmd) is
// ignored; any other unknown flag too, as the real server's traitlets would
// take it. SIGTERM stops it at once: the pod's deletion is what the tests
// time.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// version is what GET {prefix}api answers, like jupyter_server.
const version = "2.14.0"

// hubVersion is the JupyterHub version jupyterhub-singleuser reports in
// the X-JupyterHub-Version header of every response: the Hub compares it
// with its own after a spawn. The tests' hubs run JupyterHub 5.5.
const hubVersion = "5.5.1"

// config is where to listen and under which prefix, from the environment
// KubeSpawner sets and the arguments it passes.
type config struct {
	addr   string
	prefix string
	user   string
}

func parse(args []string, getenv func(string) string) (config, error) {
	c := config{addr: "0.0.0.0:8888", prefix: "/", user: getenv("JUPYTERHUB_USER")}
	host, port := "0.0.0.0", "8888"
	if s := getenv("JUPYTERHUB_SERVICE_URL"); s != "" {
		u, err := url.Parse(s)
		if err != nil {
			return c, fmt.Errorf("JUPYTERHUB_SERVICE_URL %q: %w", s, err)
		}
		if h := u.Hostname(); h != "" {
			host = h
		}
		if p := u.Port(); p != "" {
			port = p
		}
	}
	if p := getenv("JUPYTERHUB_SERVICE_PREFIX"); p != "" {
		c.prefix = p
	}
	if len(args) > 0 && args[0] == "jupyterhub-singleuser" {
		args = args[1:]
	}
	for i := 0; i < len(args); i++ {
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") && (name == "ip" || name == "port") {
			val, i = args[i+1], i+1
		}
		switch name {
		case "ip":
			host = val
		case "port":
			port = val
		}
	}
	if !strings.HasPrefix(c.prefix, "/") {
		c.prefix = "/" + c.prefix
	}
	if !strings.HasSuffix(c.prefix, "/") {
		c.prefix += "/"
	}
	c.addr = net.JoinHostPort(host, port)
	return c, nil
}

func handler(c config, started time.Time) http.Handler {
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET "+c.prefix+"api", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]string{"version": version})
	})
	mux.HandleFunc("GET "+c.prefix+"api/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"started": started.UTC().Format(time.RFC3339), "last_activity": time.Now().UTC().Format(time.RFC3339), "connections": 0, "kernels": 0})
	})
	mux.HandleFunc("GET "+c.prefix, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != c.prefix {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><title>stub server</title><h1>Stub single-user server of %s</h1>\n", html.EscapeString(c.user))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-JupyterHub-Version", hubVersion)
		mux.ServeHTTP(w, r)
	})
}

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	c, err := parse(os.Args[1:], os.Getenv)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	srv := &http.Server{Addr: c.addr, Handler: handler(c, time.Now()), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Printf("stub single-user server of %q listening on %s under %s", c.user, c.addr, c.prefix)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Print(err)
		stop()
		os.Exit(1)
	}
	stop()
}
