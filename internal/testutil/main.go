package testutil

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// Main is the TestMain of a suite that starts a control plane: it skips
// the suite in -short mode (one line), logs only errors (everything with
// HUBCREDITS_TEST_VERBOSE set), and exits with run's status.
func Main(m *testing.M, suite string, run func(*testing.M) int) {
	flag.Parse()
	if testing.Short() {
		fmt.Printf("%s: skipped in -short mode\n", suite)
		os.Exit(0)
	}
	level := zapcore.ErrorLevel
	if os.Getenv("HUBCREDITS_TEST_VERBOSE") != "" {
		level = zapcore.DebugLevel
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(level)))
	os.Exit(run(m))
}
