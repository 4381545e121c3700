package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/seghub/seghub/pkg/config"
	"github.com/seghub/seghub/pkg/destinations"
	"github.com/seghub/seghub/services/destsim"
)

// chromiumPath finds Debian's chromium. Under CI a missing browser fails the
// suite (the Makefile installs it); elsewhere the browser tests skip.
func chromiumPath(t *testing.T) string {
	t.Helper()
	candidates := []string{"chromium", "/usr/bin/chromium"}
	if v := os.Getenv("SEGHUB_CHROMIUM"); v != "" {
		candidates = []string{v}
	}
	for _, name := range candidates {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found: the browser suite needs Debian's chromium (`make chromium` installs it, or set SEGHUB_CHROMIUM)")
	}
	t.Skip("chromium not found: install Debian's chromium (`make chromium`) or set SEGHUB_CHROMIUM to run the browser suite")
	return ""
}

// screenshotDir is where the suite leaves a screenshot of each main page:
// $SEGHUB_SCREENSHOT_DIR, else testdata/out (gitignored), kept after the test.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SEGHUB_SCREENSHOT_DIR")
	if dir == "" {
		dir = filepath.Join("testdata", "out")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// newBrowser starts headless Chromium on a fresh profile and returns a
// function opening a new tab (a tab is a session: the console keeps its key
// per tab).
func newBrowser(t *testing.T) func(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // the suite runs as root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	root, cancelRoot := chromedp.NewContext(alloc)
	if err := chromedp.Do(root); err != nil {
		cancelRoot()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() { cancelRoot(); cancelAlloc() })
	// The copy buttons write to the clipboard, as they would for a user who allowed it.
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(root, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name}, Setting: browser.PermissionSettingGranted}); err != nil {
			t.Fatalf("grant %s: %v", name, err)
		}
	}
	return func(t *testing.T) context.Context {
		t.Helper()
		tab, cancel := chromedp.NewContext(root)
		if err := chromedp.Do(tab); err != nil {
			t.Fatalf("open a tab: %v", err)
		}
		ctx, cancelTimeout := context.WithTimeout(tab, 2*time.Minute)
		t.Cleanup(func() { cancelTimeout(); cancel() })
		return ctx
	}
}

// ui drives one tab the way a user does: it finds controls in the
// accessibility tree by role and accessible name, never by CSS internals.
type ui struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string
}

func (u *ui) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		u.t.Fatalf("%s: %v\npage text:\n%s", what, err, u.text())
	}
}

func eval[T any](u *ui, js string, opts ...chromedp.EvaluateOption) T {
	u.t.Helper()
	v, err := chromedp.Run(u.ctx, chromedp.Evaluate[T](js, opts...))
	if err != nil {
		u.t.Fatalf("evaluate %s: %v\npage text:\n%s", js, err, u.text())
	}
	return v
}

// text is the page's visible text (for failure messages and assertions).
func (u *ui) text() string {
	ctx, cancel := context.WithTimeout(u.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	return s
}

func (u *ui) open(path string) {
	u.t.Helper()
	u.do("open "+path, chromedp.Navigate(u.base+path))
}

func (u *ui) location() string {
	u.t.Helper()
	v, err := chromedp.Run(u.ctx, chromedp.Location())
	if err != nil {
		u.t.Fatal(err)
	}
	return v
}

// find waits until exactly one unignored node with role and name is in the
// accessibility tree and returns its backend DOM node id and whether it is
// disabled.
func (u *ui) find(role, name string) (cdp.BackendNodeID, bool) {
	u.t.Helper()
	return u.findIn(0, role, name)
}

// findIn is find within the subtree of the node scope (0: the document).
func (u *ui) findIn(scope cdp.BackendNodeID, role, name string) (cdp.BackendNodeID, bool) {
	u.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var found []*accessibility.Node
		// The document as a JS object: DOM.getDocument would invalidate the
		// node ids chromedp's own queries hold.
		root := accessibility.QueryAXTreeParams{BackendNodeID: scope, AccessibleName: name, Role: role}
		var err error
		if scope == 0 {
			var doc runtime.EvaluateResult
			if doc, err = chromedp.Call(u.ctx, runtime.Evaluate, runtime.EvaluateParams{Expression: "document"}); err == nil {
				root.ObjectID = doc.Result.ObjectID
			}
		}
		if err == nil {
			var res accessibility.QueryAXTreeResult
			res, err = chromedp.Call(u.ctx, accessibility.QueryAXTree, root)
			for _, n := range res.Nodes {
				if !n.Ignored && n.BackendDOMNodeID != 0 {
					found = append(found, n)
				}
			}
		}
		if err == nil && len(found) == 1 {
			disabled := false
			for _, p := range found[0].Properties {
				if p.Name == accessibility.PropertyNameDisabled && string(p.Value.Value) == "true" {
					disabled = true
				}
			}
			return found[0].BackendDOMNodeID, disabled
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("no single %s named %q (found %d, err %v)\npage text:\n%s", role, name, len(found), err, u.text())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mark tags the node so chromedp's mouse and keyboard actions can reach it.
func (u *ui) mark(id cdp.BackendNodeID) chromedp.CSS {
	u.t.Helper()
	tag := fmt.Sprintf("n%d", id)
	obj, err := chromedp.Call(u.ctx, dom.ResolveNode, dom.ResolveNodeParams{BackendNodeID: id})
	if err == nil {
		var res runtime.CallFunctionOnResult
		res, err = chromedp.Call(u.ctx, runtime.CallFunctionOn, runtime.CallFunctionOnParams{
			FunctionDeclaration: `function(tag) { this.setAttribute("data-e2e", tag); }`,
			ObjectID:            obj.Object.ObjectID,
			Arguments:           []*runtime.CallArgument{{Value: []byte(`"` + tag + `"`)}},
		})
		if err == nil && res.ExceptionDetails != nil {
			err = fmt.Errorf("%s", res.ExceptionDetails.Text)
		}
	}
	if err != nil {
		u.t.Fatalf("mark node: %v", err)
	}
	return chromedp.CSS(`[data-e2e="` + tag + `"]`)
}

// click presses the enabled control role/name with the mouse.
func (u *ui) click(role, name string) {
	u.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		id, disabled := u.find(role, name)
		if !disabled {
			u.do(fmt.Sprintf("click %s %q", role, name), chromedp.Click(u.mark(id)))
			return
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("%s %q stays disabled\npage text:\n%s", role, name, u.text())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// section follows the top navigation's link to a section of the console.
func (u *ui) section(name string) {
	u.t.Helper()
	nav, _ := u.find("navigation", "Sections")
	id, _ := u.findIn(nav, "link", name)
	u.do("open section "+name, chromedp.Click(u.mark(id)))
	u.find("heading", name)
}

// fill types text into the field role/name, replacing what it held.
func (u *ui) fill(role, name, text string) {
	u.t.Helper()
	id, _ := u.find(role, name)
	sel := u.mark(id)
	// Clear it as a select-all and delete would, then type.
	eval[bool](u, fmt.Sprintf(`(() => {
		const e = document.querySelector(%q);
		Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(e, "");
		e.dispatchEvent(new Event("input", { bubbles: true }));
		return true;
	})()`, string(sel)))
	// Focus and key events rather than SendKeys, which reads the node's
	// attributes outside their lock (a data race in chromedp v0.23.0).
	u.do(fmt.Sprintf("fill %q", name), chromedp.Focus(sel), chromedp.KeyEvent(text))
}

// choose picks the option whose text starts with prefix in the select labelled name.
func (u *ui) choose(name, prefix string) {
	u.t.Helper()
	id, _ := u.find("combobox", name)
	sel := u.mark(id)
	js := fmt.Sprintf(`(() => {
		const s = document.querySelector(%q);
		const o = [...s.options].find(o => o.text.startsWith(%q));
		if (!o) return false;
		Object.getOwnPropertyDescriptor(HTMLSelectElement.prototype, "value").set.call(s, o.value);
		s.dispatchEvent(new Event("change", { bubbles: true }));
		return true;
	})()`, string(sel), prefix)
	deadline := time.Now().Add(20 * time.Second)
	for !eval[bool](u, js) {
		if time.Now().After(deadline) {
			u.t.Fatalf("no option %q in %q\npage text:\n%s", prefix, name, u.text())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// value is the current value of the control role/name.
func (u *ui) value(role, name string) string {
	u.t.Helper()
	id, _ := u.find(role, name)
	v, err := chromedp.Run(u.ctx, chromedp.Value(u.mark(id)))
	if err != nil {
		u.t.Fatal(err)
	}
	return v
}

// see waits until the page shows text.
func (u *ui) see(text string) {
	u.t.Helper()
	u.waitText("see "+text, func(s string) bool { return strings.Contains(s, text) })
}

func (u *ui) waitText(what string, ok func(string) bool) {
	u.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := u.text()
		if ok(s) {
			return
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("timed out: %s\npage text:\n%s", what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot saves the whole page as name.png under the output directory.
func (u *ui) screenshot(name string) {
	u.t.Helper()
	png, err := chromedp.Run(u.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		u.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(u.shot, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		u.t.Fatal(err)
	}
	u.t.Logf("screenshot: %s", path)
}

func (u *ui) signIn(key string) {
	u.t.Helper()
	u.open("/")
	u.fill("textbox", "API key", key)
	u.click("button", "Sign in")
	u.find("heading", "Segments")
}

// The console in real Chromium against a real seghub and the destination
// simulator: the integration documents' workflows, as a user clicks them.
func TestConsoleInChromium(t *testing.T) {
	newTab := newBrowser(t)
	shots := screenshotDir(t)
	sim := destsim.New(destsim.DemoCredentials())
	simSrv := httptest.NewServer(sim)
	defer simSrv.Close()
	addr := freeAddr(t)
	r := start(t, t.TempDir(), func(c *config.Config) {
		// OAuth comes back to <public-url>/oauth/callback: this listener.
		c.HTTPAddr, c.PublicURL = addr, "http://"+addr
		c.Seed = true // users, segments and a product tour; no connection (no DestSimAddr)
		c.AppcuesURL, c.CommandBarURL, c.AnalyticsURL = simSrv.URL, simSrv.URL, simSrv.URL
	})
	admin := keyPattern.FindString(r.stdout.String())
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(r.stderr.String()+r.stdout.String(), "seeded demo data") }, "the demo seed")
	// A member without the identity property: counted unmatched, never sent.
	r.ok(t, "POST", "/v1/users:upsert", admin, `{"users":[{"user_id":"user-noid","properties":{"plan":{"string_value":"pro"}}}]}`)
	power := segmentNamed(t, r, admin, "Power users")
	r.ok(t, "POST", "/v1/segments/"+power+"/members:add", admin, `{"user_ids":["user-noid"]}`)
	tab := func(t *testing.T) *ui { return &ui{t: t, ctx: newTab(t), base: "http://" + addr, shot: shots} }

	t.Run("AppcuesWalkThrough", func(t *testing.T) {
		u := tab(t)
		u.signIn(admin)
		u.section("Integrations")
		u.fill("searchbox", "Search the directory", "appcues")
		u.waitText("the search narrows the directory", func(s string) bool { return !strings.Contains(s, "CommandBar") })
		u.screenshot("integrations")
		u.click("button", "Connect Appcues")
		u.fill("textbox", "Account ID", "demo")
		u.fill("textbox", "API Key", "demo-key")
		u.fill("textbox", "API Secret", "demo-secret")
		u.choose("Identity property", "appcuesUserID — 50 users")
		// Each property once, with how many users hold it (no stale
		// "no user holds it yet" left from while the list loaded).
		if got := eval[[]string](u, `[...document.querySelectorAll("dialog[open] select option")].map(o => o.text).filter(t => t.startsWith("appcuesUserID"))`); len(got) != 1 {
			t.Fatalf("identity property options: %q", got)
		}
		u.click("button", "Connect")
		// Appcues also sends events: its webhook secret is shown once.
		u.see("Appcues is connected.")
		u.click("button", "Open the connection")
		u.find("heading", "Appcues")
		u.see("Connected")
		if got := u.value("combobox", "Identity property"); got != "appcuesUserID" {
			t.Fatalf("identity property on the connection page = %q", got)
		}
		u.screenshot("connection")

		u.section("Segments")
		u.fill("searchbox", "Search segments by name", "power")
		u.click("link", "Power users")
		u.find("heading", "Power users")
		u.click("switch", "Appcues")
		if got := u.value("combobox", "Appcues user ID property"); got != "appcuesUserID" {
			t.Fatalf("the enable dialog proposes identity property %q", got)
		}
		u.click("button", "Sync now") // the dialog's: enable as one-time and run it
		u.see("Synced as “Power users”")
		u.click("button", "Sync now") // the row's: run again
		u.click("button", "Run history")
		// Both runs in the history: 10 added, the member without appcuesUserID unmatched.
		u.see("enable\t(succeeded)\t10\t0\t1\t0")
		u.see("manual\t(succeeded)\t0\t0\t1\t0")
		u.click("button", "Enable Recurring Sync")
		u.see("Recurring, hourly")
		u.see("1 of 10 recurring Appcues syncs in use")
		u.screenshot("segment")
		// The connection page says the same, as the server counts it.
		u.open("/integrations/connections/" + connectionNamed(t, r, admin, "Appcues"))
		u.find("heading", "Appcues")
		u.see("1 of 10 recurring Appcues syncs in use in this environment")
		u.open("/segments/" + power)
		u.find("heading", "Power users")

		// Renamed in the console; the name Appcues shows stays frozen.
		u.click("button", "Rename…")
		u.fill("textbox", "Segment name", "Power users (renamed)")
		u.click("button", "Save name")
		u.find("heading", "Power users (renamed)")
		u.open("/segments/" + power)
		u.find("heading", "Power users (renamed)")
		u.see("Synced as “Power users”")
		u.click("button", "Sync now")
		want := map[string]bool{}
		for i := 5; i <= 50; i += 5 {
			want[fmt.Sprintf("ac-%03d", i)] = true
		}
		waitFor(t, 30*time.Second, func() bool { return mapsEqual(appcuesHolders(sim, "[seghub] Power users"), want) }, "Appcues to hold exactly the segment's members")
		u.waitText("the run finishes", func(s string) bool { return !strings.Contains(s, "Syncing…") })
		if got := appcuesHolders(sim, "[seghub] Power users (renamed)"); len(got) != 0 {
			t.Fatalf("Appcues holds the segment under its new name too: %v", got)
		}
		if got := appcuesHolders(sim, "[seghub] Power users"); !mapsEqual(got, want) {
			t.Fatalf("Appcues holds %v under the frozen name, want %v", got, want)
		}
	})

	// A segment no member of which holds Appcues' identity property: its
	// toggle is disabled with the reason, and the segment list's "Targetable
	// by" filter leaves it out (ListSegments.targetable_by).
	t.Run("UntargetableSegment", func(t *testing.T) {
		seg := field(r.ok(t, "POST", "/v1/segments", admin, `{"name":"Without Appcues ids","visibility":"VISIBILITY_PUBLIC"}`), "segment", "segment_id")
		r.ok(t, "POST", "/v1/segments/"+seg+"/members:add", admin, `{"user_ids":["user-noid"]}`)
		u := tab(t)
		u.signIn(admin)
		u.open("/segments/" + seg)
		u.find("heading", "Without Appcues ids")
		u.see("No member of this segment has appcuesUserID, so Appcues cannot target it")
		if _, disabled := u.find("switch", "Appcues"); !disabled {
			t.Fatal("the Appcues toggle of a segment no member of which has appcuesUserID is enabled")
		}
		u.screenshot("segment-untargetable")
		u.section("Segments")
		u.fill("searchbox", "Search segments by name", "appcues ids")
		u.see("Without Appcues ids")
		u.choose("Targetable by", "Appcues")
		u.waitText("the filter leaves the segment out", func(s string) bool {
			return !strings.Contains(s, "Without Appcues ids") && strings.Contains(s, "has a member with appcuesUserID")
		})
	})

	t.Run("CommandBarOAuth", func(t *testing.T) {
		u := tab(t)
		u.signIn(admin)
		u.section("Integrations")
		u.click("button", "Connect CommandBar")
		u.fill("textbox", "CommandBar organisation", "org-7")
		u.click("button", "Continue to CommandBar")
		// The simulator approves at once and sends the browser to seghub's callback.
		u.waitText("the callback page", func(s string) bool {
			return strings.Contains(s, "Signing secret") || strings.Contains(s, "signing secret")
		})
		href := u.location()
		if !strings.HasPrefix(href, "http://"+addr+"/oauth/callback") {
			t.Fatalf("after Allow the browser is at %s", href)
		}
		u.screenshot("oauth-callback")
		u.click("link", "Open the connection in seghub")
		u.see("Connected")
		u.see("org-7")
		back := u.location()
		if !strings.Contains(back, "/integrations/connections/conn_") {
			t.Fatalf("the callback returned to %s", back)
		}
		if users := sim.Snapshot().Counters["tokens_issued"]; users == 0 {
			t.Fatal("the simulator issued no token")
		}
	})

	t.Run("HeapSourceWebhook", func(t *testing.T) {
		u := tab(t)
		u.signIn(admin)
		u.section("Integrations")
		u.fill("searchbox", "Search the directory", "heap")
		u.click("button", "Connect Heap (segments in)")
		u.fill("textbox", "Name", "Heap production")
		u.click("button", "Create source")
		u.see("seghub shows it only once")
		hook := eval[string](u, `document.getElementById("webhook-url").innerText`)
		secret := eval[string](u, `document.getElementById("signing-secret").innerText`)
		u.click("button", "Copy signing secret")
		u.see("Copied")
		clip := eval[string](u, `navigator.clipboard.readText()`, chromedp.EvalAwaitPromise)
		if clip != secret || secret == "" || !strings.HasPrefix(hook, "http://"+addr+"/webhooks/heap/") {
			t.Fatalf("shown once: url %q secret %q, clipboard %q", hook, secret, clip)
		}
		body := webhookBody("heap-seg-42", "Heap: Churn risk", "task-1", 1, page{n: 1, add: []string{"user-001", "user-002", "user-003"}})
		if code, out := r.post(t, strings.TrimPrefix(hook, "http://"+addr), destinations.Sign(secret, time.Now(), body), body); code != 200 {
			t.Fatalf("signed webhook: %d %v", code, out)
		}
		u.click("button", "Open the connection")
		u.see("The signing secret was shown once")
		if strings.Contains(u.text(), secret) {
			t.Fatal("the connection page shows the signing secret again")
		}
		u.section("Segments")
		u.fill("searchbox", "Search segments by name", "churn")
		u.click("link", "Heap: Churn risk")
		u.find("heading", "Heap: Churn risk")
		u.see("heap-seg-42")
		u.see("Members\n3")
	})

	t.Run("ProductTourForASegment", func(t *testing.T) {
		u := tab(t)
		u.signIn(admin)
		u.section("Targeting")
		u.click("link", "New product tour")
		u.fill("textbox", "Name", "Power user tour")
		u.choose("Audience", "Custom")
		u.click("button", "Add condition")
		u.choose("Condition", "Segment")
		u.choose("Segment", "Power users")
		u.click("button", "Create product tour")
		u.find("heading", "Power user tour") // the saved tour's page
		if got := eval[string](u, `[...document.querySelectorAll("main select")].map(s => s.selectedOptions[0]?.text).join("|")`); !strings.Contains(got, "Power users") {
			t.Fatalf("the saved audience: %s", got)
		}
		nav, _ := u.find("navigation", "Targeting sections")
		id, _ := u.findIn(nav, "link", "Check a user")
		u.do("open check a user", chromedp.Click(u.mark(id)))
		// The row of the tour in the verdicts table: name, eligible, decided by.
		row := func(user string) []string {
			u.fill("textbox", "User id", user)
			u.click("button", "Check")
			u.see("Segments " + user + " is in")
			var cells []string
			u.waitText("the verdict for "+user, func(string) bool {
				cells = eval[[]string](u, `(() => {
					const r = [...document.querySelectorAll("main tr")].find(r => r.querySelector("a")?.innerText === "Power user tour");
					return r ? [...r.cells].map(c => c.innerText) : [];
				})()`)
				return len(cells) == 4 && !strings.Contains(cells[1], "Checking")
			})
			return cells
		}
		member := row("user-005")
		if member[1] != "Eligible" {
			t.Fatalf("member user-005: %q", member)
		}
		u.screenshot("targeting-check")
		other := row("user-001")
		if other[1] != "Not eligible" || !strings.Contains(other[2], "Power users") {
			t.Fatalf("non-member user-001: %q (want not eligible, decided by the Power users condition)", other)
		}
		t.Logf("member: %q; non-member: %q", member, other)
	})

	// A computed segment made in the form: previewed without saving, created,
	// followed until live, shown in words, and its rule edited.
	t.Run("ComputedSegment", func(t *testing.T) {
		for _, user := range []string{"user-001", "user-001", "user-002", "user-002", "user-003"} {
			r.ok(t, "POST", "/v1/events:track", admin, `{"event":{"source":"api","user_id":"`+user+`","name":"Report Exported"}}`)
		}
		// The events are relayed asynchronously: wait until the rule sees them all.
		rule := `{"all":[{"event":{"source":"api","name":"Report Exported","count_operator":"COUNT_OPERATOR_AT_LEAST","times":1,"within_days":7}}]}`
		waitFor(t, 60*time.Second, func() bool {
			return r.ok(t, "POST", "/v1/segments:previewRule", admin, `{"rule":`+rule+`}`)["member_count"] == "3"
		}, "the tracked events to reach the rules")
		u := tab(t)
		u.signIn(admin)
		u.click("link", "New segment")
		u.find("heading", "New segment")
		u.fill("textbox", "Name", "Report exporters this week")
		u.click("radio", "Computed")
		u.choose("Source", "API")
		u.fill("combobox", "Event", "Report Exported")
		u.fill("spinbutton", "Times", "2")
		// A nested group left incomplete: the preview is not sent, the field says why.
		u.click("button", "Add group")
		u.find("group", "Group (level 2)")
		u.click("button", "Preview")
		u.see("enter the event's name, e.g. Flow Completed")
		u.screenshot("computed-invalid")
		u.click("button", "Remove this group")
		u.click("button", "Preview")
		u.see("2 users match this rule now.")
		u.see("user-001")
		u.screenshot("computed-new")
		if n := strings.Count(string(mustJSON(t, r.ok(t, "GET", "/v1/segments?page_size=1000", admin, ""))), "Report exporters"); n != 0 {
			t.Fatalf("the preview saved a segment (%d found)", n)
		}
		u.click("button", "Create segment")
		u.find("heading", "Report exporters this week")
		membership := func() string {
			return eval[string](u, `[...document.querySelectorAll("dl.facts dt")].find(d => d.innerText === "Membership")?.nextElementSibling?.innerText ?? ""`)
		}
		u.waitText("the segment is live", func(string) bool { return membership() == "live" })
		u.see("API · Report Exported ≥ 2 times in the last 7 days")
		u.see("All 2:")
		if s := u.text(); strings.Contains(s, "Add members") || !strings.Contains(s, "cannot be added, removed or replaced by hand") {
			t.Fatalf("a computed segment's page offers hand-edited membership:\n%s", s)
		}
		u.screenshot("computed-segment")

		// Editing the rule computes it again: once is enough now.
		u.click("button", "Edit rule…")
		u.fill("spinbutton", "Times", "1")
		u.click("button", "Save rule")
		u.waitText("the edited rule is live", func(s string) bool {
			return strings.Contains(s, "≥ 1 time in the last 7 days") && strings.Contains(s, "All 3:") && membership() == "live"
		})

		u.section("Segments")
		u.fill("searchbox", "Search segments by name", "exporters")
		u.waitText("the search narrows the list", func(s string) bool { return !strings.Contains(s, "Power users") })
		u.see("API · Report Exported ≥ 1 time in the last 7 days")
		u.find("link", "Report exporters this week")
		u.screenshot("segments-computed")
	})

	t.Run("MemberSeesNoAdminAction", func(t *testing.T) {
		member := field(r.ok(t, "POST", "/v1/api-keys", admin, `{"name":"pm","role":"ROLE_MEMBER"}`), "secret")
		u := tab(t)
		u.signIn(member)
		u.see("Member")
		// Targeting is the members' own work (experiences are member
		// operations); the other sections hold admin-only controls.
		for _, page := range []struct {
			path, role, name string
			adminOnly        bool
		}{
			{"/integrations", "button", "Connect Appcues", true},
			{"/segments/" + power, "switch", "Appcues", true},
			{"/events", "heading", "Dead letters", true},
			{"/targeting/tours", "heading", "Targeting", false},
			{"/admin", "heading", "Admin", true},
		} {
			u.open(page.path)
			u.find(page.role, page.name)
			u.waitText("the page loads", func(s string) bool { return !strings.Contains(s, "Loading") })
			// Press every enabled button the member is offered; none may end
			// in 403 (a disabled one carries its reason instead).
			pressed := eval[[]string](u, `(async () => {
				const refused = [];
				const real = window.fetch;
				window.fetch = async (...a) => { const r = await real(...a); if (r.status === 403) refused.push(String(a[0])); return r; };
				const names = [];
				const enabled = () => [...document.querySelectorAll("main button")].filter(b => !b.disabled && !b.closest("fieldset:disabled"));
				for (const b of enabled()) {
					names.push(b.getAttribute("aria-label") || b.innerText);
					b.click();
					await new Promise(r => setTimeout(r, 300));
					for (const d of document.querySelectorAll("dialog[open]")) d.close();
				}
				await new Promise(r => setTimeout(r, 500));
				window.fetch = real;
				return refused.length ? refused.map(u => "403: " + u) : names;
			})()`, chromedp.EvalAwaitPromise)
			for _, p := range pressed {
				if strings.HasPrefix(p, "403: ") {
					t.Errorf("%s: a member's enabled button ended in %s (pressed %v)", page.path, p, pressed)
				}
			}
			t.Logf("%s: a member may press %q", page.path, pressed)
			if page.adminOnly && !strings.Contains(u.text(), "admin") {
				t.Errorf("%s: no reason given for the read-only controls", page.path)
			}
		}
		u.open("/segments/" + power)
		id, disabled := u.find("switch", "Appcues")
		if !disabled {
			t.Fatalf("a member's Appcues toggle is enabled (node %d)", id)
		}
		u.screenshot("segment-member")
	})

	t.Run("APIErrorNextToItsField", func(t *testing.T) {
		u := tab(t)
		u.signIn(admin)
		u.open("/integrations")
		u.click("button", "Connect Appcues")
		u.fill("textbox", "Account ID", "demo")
		u.fill("textbox", "API Key", "wrong-key")
		u.fill("textbox", "API Secret", "demo-secret")
		u.click("button", "Connect")
		// The refused key, in the server's words, and nothing saved.
		u.see("Appcues refused these credentials")
		u.see("invalid API key or secret for this account")
		u.fill("textbox", "API Key", "demo-key")
		u.fill("textbox", "Name", strings.Repeat("x", 300))
		u.click("button", "Connect")
		// Wait for the answer to mark a field: the refusal text alone goes
		// away as soon as the second request starts.
		var where []map[string]string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			where = eval[[]map[string]string](u, `[...document.querySelectorAll("[aria-invalid=true]")].map(e => ({
				label: e.labels && e.labels[0] ? e.labels[0].innerText : "",
				error: (e.getAttribute("aria-describedby") || "").split(" ").map(id => document.getElementById(id)).filter(x => x && x.getAttribute("role") === "alert").map(x => x.innerText).join(" "),
			}))`)
			if len(where) > 0 || time.Now().After(deadline) {
				break
			}
		}
		u.screenshot("connect-error")
		if len(where) != 1 || where[0]["label"] != "Name" || where[0]["error"] == "" {
			t.Fatalf("the name's violation is shown on %v\n%s", where, u.text())
		}
		t.Logf("shown on Name: %q", where[0]["error"])
		if n := countConnections(t, r, admin, "Appcues"); n != 1 {
			t.Fatalf("%d connections named Appcues after two refusals", n)
		}
	})

	t.Run("PageScreenshots", func(t *testing.T) {
		u := tab(t)
		u.signIn(admin)
		u.screenshot("segments")
		for _, p := range []string{"events", "targeting", "admin"} {
			u.open("/" + p)
			u.find("heading", strings.ToUpper(p[:1])+p[1:])
			u.screenshot(p)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func segmentNamed(t *testing.T, r *running, key, name string) string {
	t.Helper()
	body := r.ok(t, "GET", "/v1/segments?page_size=100", key, "")
	segs, _ := body["segments"].([]any)
	for _, s := range segs {
		if m := s.(map[string]any); m["name"] == name {
			return m["segment_id"].(string)
		}
	}
	t.Fatalf("no segment %q in %v", name, body)
	return ""
}

func connectionNamed(t *testing.T, r *running, key, name string) string {
	t.Helper()
	body := r.ok(t, "GET", "/v1/connections", key, "")
	conns, _ := body["connections"].([]any)
	for _, c := range conns {
		if m := c.(map[string]any); m["name"] == name {
			return m["connection_id"].(string)
		}
	}
	t.Fatalf("no connection %q in %v", name, body)
	return ""
}

func countConnections(t *testing.T, r *running, key, name string) int {
	t.Helper()
	raw, _ := json.Marshal(r.ok(t, "GET", "/v1/connections", key, ""))
	return strings.Count(string(raw), `"name":"`+name+`"`)
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
