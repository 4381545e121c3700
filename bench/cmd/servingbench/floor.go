package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // the floor's profile, on its own address
	"os"
	"os/exec"
	"strings"
	"time"

	"google.golang.org/grpc"

	targetingv1 "github.com/seghub/seghub/gen/seghub/targeting/v1"
)

// The floor is what grpc-go and net/http cost by themselves for the same
// requests: a process (this binary run with -floor-serve) serving
// CheckMembership with a handler that answers a constant, on a grpc.Server
// without interceptors or stats handler, and the REST route with a net/http
// handler that writes a constant JSON answer. The same load clients measure
// it the same way as seghub, so seghub's CPU per request minus the floor's is
// what seghub's own code costs.

// floorTargeting answers every CheckMembership with a constant.
type floorTargeting struct {
	targetingv1.UnimplementedTargetingServiceServer
}

var floorAnswer = &targetingv1.CheckMembershipResponse{IsMember: false, IndexVersion: 1}

func (floorTargeting) CheckMembership(context.Context, *targetingv1.CheckMembershipRequest) (*targetingv1.CheckMembershipResponse, error) {
	return floorAnswer, nil
}

var floorJSON = []byte(`{"is_member":false,"index_version":"1"}` + "\n")

// serveFloor is the floor process: it prints its addresses on one line, then
// serves until killed.
func serveFloor() error {
	listen := func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
	gl, err := listen()
	if err != nil {
		return err
	}
	hl, err := listen()
	if err != nil {
		return err
	}
	pl, err := listen()
	if err != nil {
		return err
	}
	g := grpc.NewServer()
	targetingv1.RegisterTargetingServiceServer(g, floorTargeting{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/targeting/segments/{segment_id}/members/{user_id}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(floorJSON)
	})
	fmt.Printf("floor grpc=%s http=%s pprof=%s\n", gl.Addr(), hl.Addr(), pl.Addr())
	errc := make(chan error, 3)
	go func() { errc <- g.Serve(gl) }()
	go func() { errc <- http.Serve(hl, mux) }()
	go func() { errc <- http.Serve(pl, http.DefaultServeMux) }()
	return <-errc
}

// floorProcess is the floor running in its own process.
type floorProcess struct {
	cmd                *exec.Cmd
	grpcAddr, httpAddr string
	pprofAddr          string
}

func startFloor(prefix []string) (*floorProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := append(append([]string{}, prefix...), self, "-floor-serve")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	f := &floorProcess{cmd: cmd}
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- s.Text()
		}
		close(line)
	}()
	select {
	case l := <-line:
		for _, kv := range strings.Fields(l)[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "grpc":
				f.grpcAddr = v
			case "http":
				f.httpAddr = v
			case "pprof":
				f.pprofAddr = v
			}
		}
	case <-time.After(30 * time.Second):
	}
	if f.grpcAddr == "" || f.httpAddr == "" {
		f.stop()
		return nil, fmt.Errorf("the floor server did not start")
	}
	return f, nil
}

func (f *floorProcess) stop() {
	_ = f.cmd.Process.Kill()
	_ = f.cmd.Wait()
}
