package harness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Binary is a seghub all-in-one (`seghub serve`) in its own process, as a
// peer measures it: the load tools run in theirs and read its CPU from /proc.
type Binary struct {
	Cmd                *exec.Cmd
	GRPCAddr, HTTPAddr string
	// AdminKey is the environment's admin key (SEGHUB_ADMIN_KEY).
	AdminKey string
	// Dir holds its data and its log (seghub.log).
	Dir string
}

// BinaryOptions start a Binary.
type BinaryOptions struct {
	// Bin is the seghub binary.
	Bin string
	// Prefix runs it under another command (e.g. taskset -c 1).
	Prefix []string
	// Env adds SEGHUB_* settings.
	Env []string
}

// FreeAddr is a loopback address with a free port.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// NewKey returns a random key in seghub's format.
func NewKey() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 32)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		b[i] = alphabet[n.Int64()]
	}
	return "sghk_" + string(b)
}

// StartBinary starts `seghub serve` on free loopback ports in a temp dir and
// waits until /readyz answers 200 (90 s at most).
func StartBinary(o BinaryOptions) (*Binary, error) {
	dir, err := os.MkdirTemp("", "seghub-bench-")
	if err != nil {
		return nil, err
	}
	b := &Binary{AdminKey: NewKey(), Dir: dir}
	if b.GRPCAddr, err = FreeAddr(); err != nil {
		return nil, err
	}
	if b.HTTPAddr, err = FreeAddr(); err != nil {
		return nil, err
	}
	args := append(append([]string{}, o.Prefix...), o.Bin, "serve")
	b.Cmd = exec.Command(args[0], args[1:]...)
	b.Cmd.Env = append(os.Environ(), "SEGHUB_DATA_DIR="+filepath.Join(dir, "data"), "SEGHUB_GRPC_ADDR="+b.GRPCAddr,
		"SEGHUB_HTTP_ADDR="+b.HTTPAddr, "SEGHUB_ADMIN_KEY="+b.AdminKey)
	b.Cmd.Env = append(b.Cmd.Env, o.Env...)
	log, err := os.Create(filepath.Join(dir, "seghub.log"))
	if err != nil {
		return nil, err
	}
	b.Cmd.Stdout, b.Cmd.Stderr = log, log
	if err := b.Cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get("http://" + b.HTTPAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return b, nil
			}
		}
		if time.Now().After(deadline) {
			b.Stop()
			return nil, fmt.Errorf("seghub not ready in 90 s (log: %s)", log.Name())
		}
	}
}

// PID is the server's process id (of the prefix command when there is one:
// taskset execs seghub in place).
func (b *Binary) PID() int { return b.Cmd.Process.Pid }

// CPU is the server's user+system CPU time so far.
func (b *Binary) CPU() (time.Duration, error) { return ProcCPU(b.PID()) }

// Stop ends the server (SIGTERM, then SIGKILL after 30 s) and removes its dir.
func (b *Binary) Stop() {
	_ = b.Cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = b.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = b.Cmd.Process.Kill()
		<-done
	}
	_ = os.RemoveAll(b.Dir)
}

// ProcCPU is a process's user+system CPU time from /proc/<pid>/stat.
func ProcCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start at ")";
	// utime and stime are the 14th and 15th fields of the line.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck, nil
}

// Bearer sends a key as gRPC per-call credentials (over plaintext loopback).
type Bearer string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (Bearer) RequireTransportSecurity() bool { return false }

// LoadRedisSet fills the Redis set key with prefix0 … prefix(n-1), pipelined,
// so redis-benchmark asks Redis about the members seghub holds.
func LoadRedisSet(addr, key, prefix string, n int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	w, r := bufio.NewWriter(c), bufio.NewReader(c)
	bulk := func(s string) { fmt.Fprintf(w, "$%d\r\n%s\r\n", len(s), s) }
	fmt.Fprintf(w, "*2\r\n")
	bulk("DEL")
	bulk(key)
	replies := 1
	for i := 0; i < n; i += 1000 {
		batch := min(1000, n-i)
		fmt.Fprintf(w, "*%d\r\n", batch+2)
		bulk("SADD")
		bulk(key)
		for j := i; j < i+batch; j++ {
			bulk(prefix + strconv.Itoa(j))
		}
		replies++
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for i := 0; i < replies; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		if line[0] == '-' {
			return fmt.Errorf("redis: %s", line)
		}
	}
	return nil
}
