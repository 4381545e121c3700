// Command seghub runs seghub: every service in one process on the embedded
// default (SQLite + embedded JetStream), or one service per process in split
// mode (`seghub serve <service>`).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/seghub/seghub/pkg/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "seghub:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context, args []string) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "config-doc":
		fmt.Print(config.Doc())
		return nil
	case "serve":
		role := "all"
		if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
			role, args = args[0], args[1:]
		}
		cfg, err := config.Load(args, os.Getenv)
		if err != nil {
			return err
		}
		return serve(ctx, cfg, role, Hooks{Stdout: os.Stdout, Stderr: os.Stderr})
	}
	return fmt.Errorf("unknown command %q: use 'serve [all|gateway|connector|segmentsync|eventrelay|targeting]' or 'config-doc'", cmd)
}
