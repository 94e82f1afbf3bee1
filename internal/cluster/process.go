package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// start runs a component in its own session (a Ctrl-C to make reaches
// this program, which stops the components in order), its output in
// logs/<name>.log and its pid in run/<name>.pid.
func (c Config) start(name, bin string, args ...string) error {
	if err := os.MkdirAll(c.path("logs"), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(c.path("run"), 0o700); err != nil {
		return err
	}
	log, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }()
	key := c.path("logs", name+".log")
	argv.Store(key, append([]string{bin}, args...))
	exits.Delete(key)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = c.StateDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	if err := os.WriteFile(c.path("run", name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	// Reap it when it exits, so that a dead component is seen as dead,
	// and keep how it ended for the error message.
	ch := &child{pid: cmd.Process.Pid, done: make(chan struct{})}
	children.Store(key, ch)
	go func() {
		_ = cmd.Wait()
		exits.Store(key, cmd.ProcessState.String())
		close(ch.done)
	}()
	return nil
}

// child is a component this process started: its pid stays its own until
// the reaper has waited for it (done), whatever /proc says meanwhile.
type child struct {
	pid  int
	done chan struct{}
}

// ownChild is the pid of the component if this process started it and it
// has not exited; known says whether this process started it.
func (c Config) ownChild(name string) (pid int, known bool) {
	v, ok := children.Load(c.path("logs", name+".log"))
	if !ok {
		return 0, false
	}
	ch := v.(*child)
	select {
	case <-ch.done:
		return 0, true
	default:
		return ch.pid, true
	}
}

var (
	// children holds the components this process started, by log path.
	children sync.Map
	// exits holds how the components this process started ended ("exit
	// status 1", "signal: killed"), by log path.
	exits sync.Map
	// argv holds how each component was started, by log path, so that
	// one that dies at once without a word can be started again.
	argv sync.Map
	// restarted holds the log paths of the components started again.
	restarted sync.Map
)

// logEmpty says whether the component has not written a byte of log.
func (c Config) logEmpty(name string) bool {
	fi, err := os.Stat(c.path("logs", name+".log"))
	return err == nil && fi.Size() == 0
}

// restartSilent starts again, once, a component that died without a line
// of log (killed before it wrote one: seen rarely on this shared machine,
// and once in CI), and says so on stderr with how it ended. It reports
// whether it did.
func (c Config) restartSilent(name string) bool {
	key := c.path("logs", name+".log")
	if !c.logEmpty(name) {
		return false
	}
	if _, again := restarted.LoadOrStore(key, true); again {
		return false
	}
	a, ok := argv.Load(key)
	if !ok {
		return false
	}
	cmdline := a.([]string)
	fmt.Fprintf(os.Stderr, "hubcredits-cluster: %s exited at once without a line of log%s; starting it again\n", name, c.exitNote(name))
	return c.start(name, cmdline[0], cmdline[1:]...) == nil
}

// exitNote says how a component ended, and what the machine had left when
// its log is empty (a component that dies before its first line was
// killed, or could not write its log: a full disk, memory).
func (c Config) exitNote(name string) string {
	var note []string
	if st, ok := exits.Load(c.path("logs", name+".log")); ok {
		note = append(note, st.(string))
	}
	if c.logEmpty(name) {
		note = append(note, "its log is empty")
		var fs syscall.Statfs_t
		if syscall.Statfs(c.StateDir, &fs) == nil {
			note = append(note, fmt.Sprintf("%d MiB free on the state directory's filesystem", fs.Bavail*uint64(fs.Bsize)>>20))
		}
		if avail := memAvailable(); avail != "" {
			note = append(note, "MemAvailable "+avail)
		}
	}
	if len(note) == 0 {
		return ""
	}
	return " (" + strings.Join(note, "; ") + ")"
}

// memAvailable is /proc/meminfo's MemAvailable, or "".
func memAvailable() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemAvailable:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// pidOf is the component's pid if it is still the process this cluster
// started, else 0: for a component this process started, until it has
// been reaped; for one an earlier process started (a detached cluster),
// when its command line names the state directory. (Right after exec a
// process's /proc/<pid>/cmdline can read empty for a moment: the parent
// resumes before the kernel has set up the new arguments. A check there
// took live components for dead ones.)
func (c Config) pidOf(name string) int {
	if pid, known := c.ownChild(name); known {
		return pid
	}
	b, err := os.ReadFile(c.path("run", name+".pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	if !c.owns(pid) {
		return 0
	}
	return pid
}

// owns says whether pid's command line names the state directory.
func (c Config) owns(pid int) bool {
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	return strings.Contains(string(cmdline), c.StateDir)
}

// alive says whether the component is running.
func (c Config) alive(name string) bool {
	if pid, known := c.ownChild(name); known {
		return pid != 0
	}
	pid := c.pidOf(name)
	if pid == 0 {
		return false
	}
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	// A zombie (exited, not yet reaped) is not alive.
	return err == nil && !strings.Contains(string(st), ") Z ")
}

// stop sends SIGTERM, waits up to grace, then SIGKILL; it returns once the
// process is gone.
func (c Config) stop(name string, grace time.Duration) {
	pid := c.pidOf(name)
	if pid == 0 {
		return
	}
	killWait(pid, grace)
	_ = os.Remove(c.path("run", name+".pid"))
}

func killWait(pid int, grace time.Duration) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !running(pid) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 100 && running(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
}

func running(pid int) bool {
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	return !strings.Contains(string(st), ") Z ")
}

// logTail is the end of a component's log, for an error message.
func (c Config) logTail(name string, lines int) string {
	b, err := os.ReadFile(c.path("logs", name+".log"))
	if err != nil {
		return ""
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// waitFor polls ok until it returns true, the component dies, or timeout.
func (c Config) waitFor(name string, timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return nil
		}
		if name != "" && !c.alive(name) {
			// The reaper may not have stored the exit yet.
			time.Sleep(100 * time.Millisecond)
			if c.restartSilent(name) {
				continue
			}
			return fmt.Errorf("%s exited%s; the end of %s:\n%s", name, c.exitNote(name), c.path("logs", name+".log"), c.logTail(name, 15))
		}
		if time.Now().After(deadline) {
			if name == "" {
				return errors.New("timed out")
			}
			return fmt.Errorf("%s not ready after %s; the end of %s:\n%s", name, timeout, c.path("logs", name+".log"), c.logTail(name, 15))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lockPath serializes Up and Down on this machine: one real node at a time
// (they share ports, cni0 and the host's settings), and a Down never runs
// under a starting Up.
const lockPath = "/run/lock/hubcredits-cluster.lock"

// lock takes the machine-wide lock, waiting up to timeout, and returns
// its release.
func lock(timeout time.Duration) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("another hubcredits-cluster is starting or stopping a node on this machine (%s is locked)", lockPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
