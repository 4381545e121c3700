package main

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/seghub/seghub/services/destsim"
)

// startSimulator serves the destination simulator for the demo, so `make
// run` can connect Appcues and sync without leaving the machine.
func startSimulator(addr string) (string, func(), error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: destsim.New(destsim.DemoCredentials()), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return "http://" + l.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
