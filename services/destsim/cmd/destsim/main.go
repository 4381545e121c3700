// Command destsim serves the destination simulator for tests and demos.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/seghub/seghub/services/destsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := realMain(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "destsim:", err)
		os.Exit(1)
	}
}

func realMain(ctx context.Context) error {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	r429 := flag.Float64("rate-429", 0, "share of API calls answered 429 with Retry-After")
	r5xx := flag.Float64("rate-5xx", 0, "share of API calls answered 503")
	latency := flag.Int("latency-ms", 0, "latency added to API calls")
	ttl := flag.Int("token-ttl", 3600, "expires_in of issued access tokens (seconds)")
	hookSecret := flag.String("webhook-secret", "", "signing secret every webhook under /hooks/ must carry (empty: accept unsigned)")
	flag.Parse()
	creds := destsim.DemoCredentials()
	if *hookSecret != "" {
		creds.WebhookSecrets = map[string]string{"/hooks/": *hookSecret}
	}
	sim := destsim.New(creds)
	sim.SetFaults(destsim.Faults{Rate429: *r429, Rate5xx: *r5xx, LatencyMS: *latency, RetryAfter: 1, TokenTTL: *ttl})
	srv := &http.Server{Addr: *addr, Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(os.Stderr, "destsim listening on %s (state at /_sim/state)\n", *addr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
