package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/seghub/seghub/pkg/config"
)

// Unauthenticated input — webhook connection ids, Host headers, gRPC method
// names — must not create metric series: each would pin memory for the life
// of the process and push real series into overflow.
func TestUnauthenticatedInputCreatesNoMetricSeries(t *testing.T) {
	r := start(t, t.TempDir(), nil)
	defer r.stop()
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var names []string
	probe := func(n int) {
		for range n {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			id := "zz" + hex.EncodeToString(b)
			names = append(names, id)
			for _, src := range config.WebhookSources {
				if code, _ := r.post(t, "/webhooks/"+src+"/conn_"+id, "ts:1,hmac:00", []byte(`{}`)); code != http.StatusForbidden {
					t.Fatalf("%s webhook for an unknown connection: %d, want 403", src, code)
				}
			}
			// OFREP without a key, for a flag named by the caller.
			oreq, _ := http.NewRequest("POST", "http://"+r.httpAddr+"/ofrep/v1/evaluate/flags/"+id, strings.NewReader(`{"context":{"targetingKey":"`+id+`"}}`))
			oresp, err := http.DefaultClient.Do(oreq)
			if err != nil {
				t.Fatal(err)
			}
			oresp.Body.Close()
			if oresp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("OFREP without a key: %d, want 401", oresp.StatusCode)
			}
			req, _ := http.NewRequest("GET", "http://"+r.httpAddr+"/healthz", nil)
			req.Host = id + ".example:" + id[2:6]
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = conn.Invoke(ctx, "/seghub."+id+".v1.Service/"+id, &emptypb.Empty{}, &emptypb.Empty{})
			cancel()
			if err == nil {
				t.Fatal("an unknown gRPC method answered")
			}
		}
	}
	series := func() (map[string]bool, string) {
		resp, err := http.Get("http://" + r.httpAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		set := map[string]bool{}
		for _, line := range strings.Split(string(b), "\n") {
			if line != "" && !strings.HasPrefix(line, "#") {
				set[line[:strings.LastIndexByte(line, ' ')]] = true
			}
		}
		return set, string(b)
	}
	probe(5) // the series for refused requests exist from here on
	series() // and those of the scrape itself
	before, _ := series()
	probe(100)
	after, text := series()
	for _, id := range names {
		if strings.Contains(text, id) {
			t.Fatalf("caller-chosen name %s became a metric label:\n%.2000s", id, grepLines(text, id))
		}
	}
	if !strings.Contains(text, `connection_id="unknown"`) {
		t.Fatalf("refused webhooks for unknown connections are not counted under one label:\n%.1500s", grepLines(text, "inbound"))
	}
	// A little slack for series the running process adds by itself.
	var added []string
	for s := range after {
		if !before[s] {
			added = append(added, s)
		}
	}
	if len(added) > 20 {
		t.Fatalf("600 unauthenticated requests with fresh names added %d series to /metrics:\n%s", len(added), strings.Join(added, "\n"))
	}
}
