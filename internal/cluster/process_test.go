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
