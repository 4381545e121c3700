package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/seghub/seghub/pkg/config"
)

// readmeWalkthrough is the shell block under README.md's "## Try it".
func readmeWalkthrough(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\n## Try it[^\n]*\n.*?\n```sh\n(.*?)\n```\n").FindSubmatch(raw)
	if m == nil {
		t.Fatal("README.md has no ```sh block under \"## Try it\"")
	}
	return string(m[1])
}

// The README's walk-through itself, pasted into bash -e against the
// all-in-one started as `make run` starts it (seeded, simulator beside it,
// no destination allow list). The README names localhost:8080 and :8090;
// the test listens on free ports, so those two addresses and the key
// placeholder are substituted before the block runs, nothing else.
// A curl wrapper records each call's HTTP status on the side (curl -D) so
// that an answer the README does not promise fails the test even where
// the README discards it.
func TestReadmeWalkthrough(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("the README walk-through needs curl")
	}
	simAddr := freeAddr(t)
	r := start(t, t.TempDir(), func(c *config.Config) {
		c.Seed, c.DestSimAddr, c.DestinationAllow = true, simAddr, ""
	})
	key := keyPattern.FindString(r.stdout.String())
	if key == "" {
		t.Fatalf("make run prints no admin key:\n%s", r.stdout)
	}
	// The seed runs in the background; the README is read after make run
	// printed its key, by which time a newcomer sees the demo in place.
	waitFor(t, 30*time.Second, func() bool {
		code, body := r.do(t, "GET", "/v1/syncs", key, "")
		syncs, _ := body["syncs"].([]any)
		code2, body2 := r.do(t, "GET", "/v1/targeting/users/user-002/experiences?type=EXPERIENCE_TYPE_PRODUCT_TOUR", key, "")
		tours, _ := body2["experiences"].([]any)
		return code == 200 && len(syncs) > 0 && code2 == 200 && len(tours) == 1
	}, "the seeded demo")

	script := readmeWalkthrough(t)
	if !strings.Contains(script, "export KEY=sghk_...") {
		t.Fatal("the walk-through no longer starts with export KEY=sghk_...")
	}
	script = strings.NewReplacer(
		"sghk_...", key,
		"localhost:8080", r.httpAddr,
		"localhost:8090", simAddr,
	).Replace(script)

	calls := t.TempDir()
	wrapper := fmt.Sprintf(`curl() { command curl -D "%s/$(date +%%s%%N)-$BASHPID" "$@"; }
`, calls)
	cmd := exec.Command("bash", "-e", "-c", wrapper+script)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	stdout := string(out)
	if err != nil {
		t.Fatalf("the walk-through failed: %v\n%s", err, stdout)
	}

	// Every HTTP answer, in order.
	names, _ := filepath.Glob(filepath.Join(calls, "*"))
	sort.Strings(names)
	var statuses []string
	for _, n := range names {
		h, _ := os.ReadFile(n)
		f := strings.Fields(string(h))
		if len(f) < 2 {
			t.Fatalf("no answer recorded in %s: %q", n, h)
		}
		statuses = append(statuses, f[1])
	}
	var unexpected []string
	var refusals []string
	for i, s := range statuses {
		switch {
		case strings.HasPrefix(s, "2"):
		case s == "403" || s == "401" || s == "413":
			refusals = append(refusals, s)
		default:
			unexpected = append(unexpected, fmt.Sprintf("call %d: %s", i+1, s))
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("answers the README does not promise: %v\n%s", unexpected, stdout)
	}
	if got := strings.Join(refusals, ","); got != "403,401,413" {
		t.Errorf("refusals = %s, the README promises 403 (member key), 401 (no key), 413 (oversized body)\n%s", got, stdout)
	}

	// What the comments promise, in the README's order. protojson adds
	// spaces after separators at random; they are taken out before matching.
	compact := regexp.MustCompile(`([,:])[ \t]+(["{\[\d-]|true|false|null)`).ReplaceAllString(stdout, "$1$2")
	at := 0
	for _, want := range []struct{ what, pattern string }{
		{"healthz", `\{"status":"ok"\}`},
		{"readyz: every service SERVING, its dependencies ok", `\{"status":"ready","services":\{"admin":\{"status":"SERVING","dependencies":\{"database":"ok","migrations":"ok","nats":"ok"\}\},"connector":\{"status":"SERVING"[^\n]*"targeting":\{"status":"SERVING","dependencies":\{"database":"ok","index":"ok","migrations":"ok","nats":"ok"\}\}\}\}`},
		{"member key refused keys", `403\n`},
		{"no key", `(?m)^401$`},
		{"seeded public segments", `"name":"Trial users who never finished onboarding"`},
		{"membership, naming the index version (it may not have caught up with the add yet)", `"is_member":(true|false),"index_version":"\d+"`},
		{"the seeded product tour", `"name":"Finish onboarding tour","type":"EXPERIENCE_TYPE_PRODUCT_TOUR"`},
		{"syncs: frozen name, last sync, next run", `"frozen_display_name":"Trial users[^"]*","last_synced_time":"[^"]+","last_status":"SYNC_RUN_STATUS_SUCCEEDED","last_error":"","next_run_time":"[^"]+"`},
		{"Sync now queued a manual run", `"trigger":"SYNC_RUN_TRIGGER_MANUAL"`},
		{"runs: added, removed, unmatched, failed", `"added":"\d+","removed":"\d+","unmatched":"\d+","failed":"\d+"`},
		{"what Appcues holds", `"\[seghub\] Trial users`},
		{"a Heap connection with its signing secret", `"webhook_path":"/webhooks/heap/conn_[^"]+"\},"signing_secret":"whsec_`},
		{"batch: 1 stored, 1 rejected", `"event_ids":\["evt_[^"]+"\],"rejected":\[\{"index":1,`},
		{"delivered under the display name", `(?m)^[^\n]*"Flow Started"$`},
		{"a preview of a rule", `"member_count":"\d+","sample_user_ids":\["user-`},
		{"a live computed segment", `"name":"Completed onboarding this week"[^\n]*"name":"Flow Completed"[^\n]*"compute_state":"COMPUTE_STATE_LIVE","compute_percent":100`},
		{"the tour of the computed segment", `"name":"Next steps tour","type":"EXPERIENCE_TYPE_PRODUCT_TOUR"`},
		{"413 naming the limit", `(?m)^413$`},
		{"gRPC call counts", `rpc_server_call_duration_seconds_count\{`},
		{"index version", `seghub_targeting_index_version\{`},
	} {
		loc := regexp.MustCompile(want.pattern).FindStringIndex(compact[at:])
		if loc == nil {
			t.Fatalf("after offset %d the walk-through's output lacks %s (%s):\n%s", at, want.what, want.pattern, stdout)
		}
		at += loc[1]
	}
}
