package harness

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/seghub/seghub/pkg/store"
)

// Split is seghub in split mode: one process per service on loopback, on a
// fresh PostgreSQL database of its own and an external NATS (a namespace of
// its own), with Relays eventrelay processes.
type Split struct {
	HTTPAddr, AdminKey string
	// RelayAddrs are the eventrelay replicas' gRPC addresses; the gateway
	// routes to the first.
	RelayAddrs []string
	// Dir holds each process's data and log (<name>.log).
	Dir   string
	procs []*exec.Cmd
	admin string // the PostgreSQL server's admin URL
	db    string // the database made for this split
}

// SplitOptions start a Split.
type SplitOptions struct {
	// Bin is the seghub binary.
	Bin string
	// PostgresURL is an admin URL of the PostgreSQL server (a database is
	// created on it and dropped by Stop); NATSURL the NATS JetStream server.
	PostgresURL, NATSURL string
	// Relays is how many eventrelay processes to run (at least 1).
	Relays int
	// Env adds SEGHUB_* settings.
	Env []string
}

// StartSplit starts the services and waits until the gateway's /readyz
// answers 200 (90 s at most).
func StartSplit(ctx context.Context, o SplitOptions) (*Split, error) {
	dir, err := os.MkdirTemp("", "seghub-split-")
	if err != nil {
		return nil, err
	}
	s := &Split{AdminKey: NewKey(), Dir: dir, admin: o.PostgresURL}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	s.db = "seghub_bench_" + hex.EncodeToString(b[:6])
	if err := s.exec(ctx, "CREATE DATABASE "+s.db); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	i := strings.LastIndex(o.PostgresURL, "/")
	dbURL := o.PostgresURL[:i+1] + s.db
	if j := strings.Index(o.PostgresURL[i:], "?"); j >= 0 {
		dbURL += o.PostgresURL[i+j:]
	}
	addrs := map[string]string{}
	for _, svc := range []string{"gateway", "connector", "segmentsync", "targeting"} {
		if addrs[svc], err = FreeAddr(); err != nil {
			return nil, err
		}
	}
	for range max(o.Relays, 1) {
		a, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		s.RelayAddrs = append(s.RelayAddrs, a)
	}
	if s.HTTPAddr, err = FreeAddr(); err != nil {
		return nil, err
	}
	env := append(os.Environ(),
		"SEGHUB_DATABASE_URL="+dbURL,
		"SEGHUB_NATS_URL="+o.NATSURL,
		"SEGHUB_BUS_NAMESPACE=b"+hex.EncodeToString(b[6:12]),
		"SEGHUB_SECRET_KEY="+base64.StdEncoding.EncodeToString(b),
		"SEGHUB_INTERNAL_KEY=internal-"+base64.RawURLEncoding.EncodeToString(b[:24]),
		"SEGHUB_ADMIN_KEY="+s.AdminKey,
		"SEGHUB_ADMIN_ADDR="+addrs["gateway"],
		"SEGHUB_CONNECTOR_ADDR="+addrs["connector"],
		"SEGHUB_SEGMENTSYNC_ADDR="+addrs["segmentsync"],
		"SEGHUB_EVENTRELAY_ADDR="+s.RelayAddrs[0],
		"SEGHUB_TARGETING_ADDR="+addrs["targeting"],
		"SEGHUB_HTTP_ADDR="+s.HTTPAddr,
		"SEGHUB_DESTINATION_ALLOW=127.0.0.0/8,::1",
	)
	env = append(env, o.Env...)
	start := func(name, svc, addr string) error {
		cmd := exec.Command(o.Bin, "serve", svc)
		cmd.Env = append(append([]string(nil), env...), "SEGHUB_GRPC_ADDR="+addr, "SEGHUB_DATA_DIR="+filepath.Join(dir, name))
		log, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			return err
		}
		s.procs = append(s.procs, cmd)
		return nil
	}
	for _, svc := range []string{"gateway", "connector", "segmentsync", "targeting"} {
		if err := start(svc, svc, addrs[svc]); err != nil {
			s.Stop()
			return nil, err
		}
	}
	for i, a := range s.RelayAddrs {
		if err := start(fmt.Sprintf("eventrelay-%d", i+1), "eventrelay", a); err != nil {
			s.Stop()
			return nil, err
		}
	}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get("http://" + s.HTTPAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("split mode not ready in 90 s (logs in %s)", dir)
		}
	}
}

func (s *Split) exec(ctx context.Context, stmt string) error {
	db, err := store.Open(ctx, s.admin)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, stmt)
	return err
}

// Stop ends every process (SIGTERM, then SIGKILL after 30 s), drops the
// database and removes the logs.
func (s *Split) Stop() {
	for _, cmd := range s.procs {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, cmd := range s.procs {
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.exec(ctx, "DROP DATABASE IF EXISTS "+s.db+" WITH (FORCE)")
	_ = os.RemoveAll(s.Dir)
}
