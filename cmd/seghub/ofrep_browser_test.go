package main

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestOFREPWebSDKInChromium drives the console build's OFREP demo page in
// Chromium: the OpenFeature web SDK and its OFREP provider, with a client
// key, see the Beta tour true for a member and false for a non-member, and
// the provider's polling re-fetch of an unchanged answer is a 304.
func TestOFREPWebSDKInChromium(t *testing.T) {
	newTab := newBrowser(t)
	w := newOFREPWorld(t)
	for _, c := range []struct {
		user string
		want string
	}{
		{"u1", "Flag " + w.tour + " is true (TARGETING_MATCH, decided by match.conditions[0])"},
		{"u2", "Flag " + w.tour + " is false (DEFAULT"},
	} {
		t.Run(c.user, func(t *testing.T) {
			u := &ui{t: t, ctx: newTab(t), base: "http://" + w.r.httpAddr, shot: screenshotDir(t)}
			u.open("/ofrep-demo.html?poll=300")
			u.find("heading", "OpenFeature (OFREP) demo")
			u.fill("textbox", "User id", c.user)
			u.fill("textbox", "Flag key", w.tour)
			// A password field has no textbox role: find it by its label.
			u.do("fill the client key", chromedp.Focus(chromedp.CSS(`input[name="key"]`)), chromedp.KeyEvent(w.client))
			u.click("button", "Evaluate")
			u.see(c.want)
			// The first bulk call is a 200; polling then sends its ETag back
			// and the unchanged answer costs a 304.
			u.waitText("a 304 on re-fetch", func(s string) bool {
				return strings.Contains(s, "Bulk responses: 200, 304")
			})
			u.screenshot("ofrep-demo-" + c.user)
		})
	}
}
