package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A component killed before it wrote a line of log is started again once;
// one that dies so twice is reported with how it ended and the machine's
// free disk and memory.
func TestSilentDeathIsRestartedOnce(t *testing.T) {
	for name, tc := range map[string]struct {
		script  string
		wantErr []string
	}{
		"killed once, then runs": {
			script: `if [ ! -e "$0.once" ]; then touch "$0.once"; kill -9 $$; fi; echo up; touch "$0.ready"; exec sleep 30`,
		},
		"killed every time": {
			script:  `kill -9 $$`,
			wantErr: []string{"exited (signal: killed; its log is empty;", "MiB free on the state directory's filesystem", "MemAvailable"},
		},
		"a failure with words is not retried": {
			script:  `if [ -e "$0.once" ]; then touch "$0.ready"; exec sleep 30; fi; touch "$0.once"; echo "bad flag"; exit 3`,
			wantErr: []string{"exited (exit status 3); the end of", "bad flag"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := Config{StateDir: t.TempDir()}
			script := filepath.Join(c.StateDir, "component.sh")
			if err := os.WriteFile(script, []byte(tc.script+"\n"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := c.start("component", "/bin/sh", script); err != nil {
				t.Fatal(err)
			}
			defer c.stop("component", time.Second)
			err := c.waitFor("component", 10*time.Second, func() bool {
				_, err := os.Stat(script + ".ready")
				return err == nil
			})
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("waitFor: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("waitFor succeeded")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("waitFor: %v\nwant it to say %q", err, want)
				}
			}
		})
	}
}

// A component this process started is alive until it is reaped, whatever
// /proc says: right after exec its cmdline can read empty for a moment
// (the parent resumes before the kernel has set up the new arguments),
// which made a live kubelet, kube-proxy or kube-router look dead and the
// whole start fail. Here the command line does not name the state
// directory at all, as /proc's empty one did not.
func TestOwnComponentIsAliveUntilReaped(t *testing.T) {
	c := Config{StateDir: t.TempDir()}
	if err := c.start("sleeper", "sleep", "30"); err != nil {
		t.Fatal(err)
	}
	if !c.alive("sleeper") || c.pidOf("sleeper") == 0 {
		t.Fatal("a component just started looks dead")
	}
	c.stop("sleeper", time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for c.alive("sleeper") {
		if time.Now().After(deadline) {
			t.Fatal("a stopped component still looks alive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c.pidOf("sleeper") != 0 {
		t.Error("a reaped component still has a pid")
	}
}
