package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	adminv1 "github.com/seghub/seghub/gen/seghub/admin/v1"
	"github.com/seghub/seghub/pkg/admin"
	"github.com/seghub/seghub/pkg/app"
	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/services/connector"
	"github.com/seghub/seghub/services/eventrelay"
	"github.com/seghub/seghub/services/gateway"
	"github.com/seghub/seghub/services/segmentsync"
	"github.com/seghub/seghub/services/targeting"
)

// Hooks let tests see where servers listen and what was printed.
type Hooks struct {
	Stdout, Stderr io.Writer
	// Ready, if set, receives the gRPC and HTTP addresses once both listen.
	Ready func(grpcAddr, httpAddr string)
}

var roles = []string{"all", app.Gateway, app.Connector, app.SegmentSync, app.EventRelay, app.Targeting}

// serve runs the services of role until ctx ends. "all" is the all-in-one;
// the gateway also hosts the admin service in split mode.
func serve(ctx context.Context, cfg *config.Config, role string, h Hooks) error {
	if !slices.Contains(roles, role) {
		return fmt.Errorf("unknown service %q: one of %v", role, roles)
	}
	has := func(name string) bool { return role == "all" || role == name }
	if cfg.DestSimAddr != "" && role == "all" {
		url, stop, err := startSimulator(cfg.DestSimAddr)
		if err != nil {
			return err
		}
		defer stop()
		cfg.AppcuesURL, cfg.CommandBarURL, cfg.ABTastyURL, cfg.AnalyticsURL = url, url, url, url
		// The simulator the operator asked for, and only it, is reachable
		// although it listens on a loopback (or private) address.
		cfg.DestinationAllow = strings.TrimPrefix(cfg.DestinationAllow+","+strings.TrimPrefix(url, "http://"), ",")
	}
	p, err := app.NewPlatform(ctx, cfg, app.Options{Name: role, LogOutput: h.Stderr, NeedBus: has(app.SegmentSync) || has(app.EventRelay) || has(app.Targeting)})
	if err != nil {
		return err
	}
	defer p.Close()

	seedEnv := ""
	if has(app.Gateway) {
		env, secret, err := p.Admin.Bootstrap(ctx, cfg.AdminKey)
		if err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		if secret != "" && cfg.Seed && role == "all" {
			seedEnv = env.ID
		}
		if secret != "" && cfg.AdminKey == "" {
			fmt.Fprintf(h.Stdout, "\nseghub: created environment %q (%s) and its admin key; it is shown only this once:\n\n    %s\n\n", env.Name, env.ID, secret)
		}
	}

	lis, err := p.Listen(cfg.GRPCAddr)
	if err != nil {
		return err
	}
	srv, err := p.NewGRPCServer()
	if err != nil {
		lis.Close()
		return err
	}
	var services []app.Service
	if has(app.Gateway) {
		adminv1.RegisterAdminServiceServer(srv.Server, admin.NewServer(p.Admin, p.Auth.Forget))
	}
	type ctor func(context.Context, *app.Platform) (app.Service, error)
	for _, c := range []struct {
		name string
		new  ctor
	}{
		{app.Connector, func(ctx context.Context, p *app.Platform) (app.Service, error) { return connector.New(ctx, p) }},
		{app.SegmentSync, func(ctx context.Context, p *app.Platform) (app.Service, error) { return segmentsync.New(ctx, p) }},
		{app.EventRelay, func(ctx context.Context, p *app.Platform) (app.Service, error) { return eventrelay.New(ctx, p) }},
		{app.Targeting, func(ctx context.Context, p *app.Platform) (app.Service, error) { return targeting.New(ctx, p) }},
	} {
		if !has(c.name) {
			continue
		}
		s, err := c.new(ctx, p)
		if err != nil {
			lis.Close()
			return fmt.Errorf("%s: %w", c.name, err)
		}
		s.Register(srv)
		services = append(services, s)
	}
	if has(app.Targeting) && has(app.Gateway) {
		// REST lookups call targeting in-process: same interceptors and
		// stats, no loopback HTTP/2 hop.
		p.SetLocal(app.Targeting, srv.InProcess())
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(ctx, lis) })
	for _, s := range services {
		g.Go(func() error {
			err := s.Run(ctx)
			if ctx.Err() != nil {
				return nil // stopping: a service cut off while it starts has not failed
			}
			return err
		})
	}
	httpAddr := ""
	if has(app.Gateway) {
		gw, err := gateway.New(ctx, p)
		if err != nil {
			return err
		}
		hl, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
		}
		httpAddr = hl.Addr().String()
		hs := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second}
		g.Go(func() error {
			var err error
			if cfg.TLSCert != "" {
				err = hs.ServeTLS(hl, cfg.TLSCert, cfg.TLSKey)
			} else {
				err = hs.Serve(hl)
			}
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return err
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return hs.Shutdown(sctx)
		})
	}
	if cfg.PprofAddr != "" {
		if err := servePprof(ctx, g, cfg.PprofAddr); err != nil {
			return err
		}
	}
	if seedEnv != "" {
		g.Go(func() error {
			if err := seed(ctx, p, seedEnv); err != nil && ctx.Err() == nil {
				p.Logger.Error("seeding demo data failed", "error", err.Error())
			}
			return nil
		})
	}
	p.Logger.Info("seghub started", "role", role, "grpc", lis.Addr().String(), "http", httpAddr, "database", p.DB.Dialect.String(), "embedded_nats", p.Bus != nil && p.Bus.Embedded())
	if h.Ready != nil {
		h.Ready(lis.Addr().String(), httpAddr)
	}
	err = g.Wait()
	p.Logger.Info("seghub stopped", "role", role)
	return err
}

// servePprof serves net/http/pprof on addr until ctx ends, so CPU profiles can
// be taken of the running server under load (`go tool pprof
// http://addr/debug/pprof/profile?seconds=10`).
func servePprof(ctx context.Context, g *errgroup.Group, addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s (pprof): %w", addr, err)
	}
	// A profile runs for as long as it was asked (seconds=N): no write timeout.
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	g.Go(func() error {
		if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		return hs.Close()
	})
	return nil
}
