package grpcserver

import (
	"context"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// DependencyHeader is the response header of a health check that lists
// each dependency of the checked service as "name=ok" or "name=<reason>".
const DependencyHeader = "seghub-dependency"

// checkTimeout bounds one readiness check of all dependencies.
const checkTimeout = 2 * time.Second

// Readiness holds a process's dependency checks: those of the process
// (service "": the database, NATS) and those of one service (targeting's
// index). A health check of a service runs both.
type Readiness struct {
	mu     sync.Mutex
	checks map[string][]dependency
}

type dependency struct {
	name  string
	check func(context.Context) error
}

// Add registers dependency name of service ("" for every service of the
// process); check returns why it is not ready, nil when it is.
func (r *Readiness) Add(service, name string, check func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.checks == nil {
		r.checks = map[string][]dependency{}
	}
	r.checks[service] = append(r.checks[service], dependency{name, check})
}

// DependencyResult is one dependency's state: Reason is empty when ready.
type DependencyResult struct {
	Name, Reason string
}

// Check runs the checks of service (and of the process) concurrently.
func (r *Readiness) Check(ctx context.Context, service string) []DependencyResult {
	r.mu.Lock()
	deps := append([]dependency(nil), r.checks[""]...)
	if service != "" {
		deps = append(deps, r.checks[service]...)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	out := make([]DependencyResult, len(deps))
	var wg sync.WaitGroup
	for i, d := range deps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].Name = d.name
			if err := d.check(ctx); err != nil {
				out[i].Reason = err.Error()
			}
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// readyHealth is gRPC health whose Check of a named service also runs that
// service's dependency checks: NOT_SERVING when one fails, each result in
// the DependencyHeader response header. Watch and List report the plain
// serving status.
type readyHealth struct {
	*health.Server
	ready *Readiness
}

func (h readyHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	// The process's own status ("" is NOT_SERVING once it shuts down);
	// a named service is known here when it registered checks.
	resp, err := h.Server.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING || req.GetService() == "" {
		return resp, err
	}
	results := h.ready.Check(ctx, req.GetService())
	md := metadata.MD{}
	for _, r := range results {
		v := "ok"
		if r.Reason != "" {
			v = r.Reason
			resp = &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}
		}
		md.Append(DependencyHeader, r.Name+"="+v)
	}
	_ = grpc.SetHeader(ctx, md)
	return resp, nil
}
