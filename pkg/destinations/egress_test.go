package destinations

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// Every range the policy refuses by default, in each form an address can be
// written in, and addresses it must not refuse.
func TestRefusedRanges(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr string
		want string // "" = reachable
	}{
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"::1", "loopback"},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "unspecified"},
		{"::", "unspecified"},
		{"10.0.0.1", "private"},
		{"10.255.255.255", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"100.64.0.1", "shared (carrier-grade NAT)"},
		{"100.127.255.255", "shared (carrier-grade NAT)"},
		{"169.254.169.254", "cloud metadata"},
		{"fd00:ec2::254", "cloud metadata"},
		{"169.254.1.1", "link-local"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"::1%lo", "loopback"},
		{"febf::1", "link-local"},
		{"fc00::1", "unique local (private)"},
		{"fd12:3456::1", "unique local (private)"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"ff02::1", "multicast"},
		{"255.255.255.255", "reserved"},
		// IPv4-mapped, IPv4-compatible and NAT64 forms of refused IPv4 addresses.
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:169.254.169.254", "cloud metadata"},
		{"::ffff:10.0.0.1", "private"},
		{"::ffff:a9fe:a9fe", "cloud metadata"},
		{"::127.0.0.1", "IPv4-compatible"},
		{"64:ff9b::a9fe:a9fe", "cloud metadata"},
		{"64:ff9b::7f00:1", "loopback"},
		// Public addresses, including neighbours of refused ranges.
		{"8.8.8.8", ""},
		{"172.15.255.255", ""},
		{"172.32.0.0", ""},
		{"100.63.255.255", ""},
		{"100.128.0.0", ""},
		{"169.253.255.255", ""},
		{"11.0.0.0", ""},
		{"::ffff:8.8.8.8", ""},
		{"64:ff9b::808:808", ""},
		{"2606:4700:4700::1111", ""},
		{"fec0::1", ""}, // site-local, deprecated and globally unrouted, but not in any refused range
	} {
		if got := RefusedRange(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("RefusedRange(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// fakeDNS answers names from a table, so no test depends on real DNS.
func fakeDNS(table map[string][]string) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		var out []netip.Addr
		for _, a := range table[host] {
			out = append(out, netip.MustParseAddr(a))
		}
		if len(out) == 0 {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return out, nil
	}
}

// CheckURL refuses what the dial would refuse, naming why, and lets the
// allow list open single hosts, host:port pairs and ranges.
func TestCheckURL(t *testing.T) {
	t.Parallel()
	dns := fakeDNS(map[string][]string{
		"localhost":          {"127.0.0.1", "::1"},
		"rebind.example":     {"93.184.216.34", "10.1.2.3"}, // one public, one private answer
		"hooks.example":      {"93.184.216.34"},
		"internal.corp":      {"10.20.0.5"},
		"metadata.internal":  {"169.254.169.254"},
		"v6private.example":  {"fd12::1"},
		"mapped.example":     {"::ffff:127.0.0.1"},
		"onprem.corp":        {"192.168.5.5"},
		"hooks.corp.example": {"10.9.9.9"},
	})
	for _, tc := range []struct {
		allow, url string
		refused    string // substring of the error; "" = accepted
	}{
		{"", "http://169.254.169.254/latest/meta-data/", "cloud metadata address 169.254.169.254"},
		{"", "http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"},
		{"", "http://127.0.0.1:8080/x", "loopback address 127.0.0.1"},
		{"", "http://[::1]/x", "loopback"},
		{"", "http://[fe80::1%25eth0]/x", "link-local"},
		{"", "http://127.1/x", "not a host name or IP address"},
		{"", "http://2130706433/x", "not a host name or IP address"},
		{"", "http://0x7f000001/x", "not a host name or IP address"},
		{"", "http://0x7f.0.0.1/x", "not a host name or IP address"},
		{"", "http://017700000001/x", "not a host name or IP address"},
		{"", "http://[::ffff:127.0.0.1]/x", "loopback"},
		{"", "http://10.0.0.1/x", "private address 10.0.0.1"},
		{"", "http://0.0.0.0/x", "unspecified"},
		{"", "http://localhost:9999/x", "loopback"},
		{"", "http://LOCALHOST./x", "loopback"},
		{"", "http://rebind.example/x", "private address 10.1.2.3"},
		{"", "http://metadata.internal/x", "cloud metadata"},
		{"", "http://v6private.example/x", "unique local"},
		{"", "http://mapped.example/x", "loopback"},
		{"", "https://hooks.example/seghub", ""},
		{"", "https://unresolvable.example/seghub", ""}, // checked again when dialled
		{"", "ftp://hooks.example/x", "absolute http:// or https:// URL"},
		{"", "hooks.example/x", "absolute http:// or https:// URL"},
		{"", "http:///x", "absolute http:// or https:// URL"},
		{"", "https://user:pw@hooks.example/x", "user name or password"},
		{"", "https://hooks.example:99999/x", "not a port number"},
		// Allowed by name, host:port or range.
		{"internal.corp", "http://internal.corp/x", ""},
		{"INTERNAL.corp", "http://internal.corp:8443/x", ""},
		{"internal.corp:8443", "http://internal.corp:8443/x", ""},
		{"internal.corp:8443", "http://internal.corp:8444/x", "private address 10.20.0.5"},
		{"10.0.0.0/8", "http://internal.corp/x", ""},
		{"10.20.0.5", "http://internal.corp/x", ""},
		{"10.0.0.0/8", "http://onprem.corp/x", "private address 192.168.5.5"},
		{"127.0.0.1:8090", "http://127.0.0.1:8090/x", ""},
		{"127.0.0.1:8090", "http://127.0.0.1:8091/x", "loopback"},
		{"[::1]:8090", "http://[::1]:8090/x", ""},
		{"::1", "http://[::1]:1/x", ""},
		{"127.0.0.0/8,::1", "http://localhost:1/x", ""},
		{"fd00::/8", "http://v6private.example/x", ""},
		{"10.20.0.0/16, hooks.corp.example", "http://hooks.corp.example/x", ""},
		// Allowing loopback does not open the metadata address.
		{"127.0.0.0/8", "http://169.254.169.254/x", "cloud metadata"},
	} {
		e, err := NewEgress(tc.allow)
		if err != nil {
			t.Fatalf("NewEgress(%q): %v", tc.allow, err)
		}
		e.resolve = dns
		err = e.CheckURL(context.Background(), tc.url)
		switch {
		case tc.refused == "" && err != nil:
			t.Errorf("allow %q: CheckURL(%s) = %v, want accepted", tc.allow, tc.url, err)
		case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
			t.Errorf("allow %q: CheckURL(%s) = %v, want refused with %q", tc.allow, tc.url, err, tc.refused)
		}
	}
}

func TestAllowListParsed(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "localhost", "127.0.0.1:8090,[::1]:8090", "10.0.0.0/8, fd00::/8", "sim.internal:443", "::1"} {
		if _, err := NewEgress(ok); err != nil {
			t.Errorf("NewEgress(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"http://sim.internal", "sim.internal:0", "sim.internal:http", "10.0.0.0/33", "a b", "sim..internal"} {
		_, err := NewEgress(bad)
		if err == nil || !strings.Contains(err.Error(), AllowSetting) {
			t.Errorf("NewEgress(%q) = %v, want an error naming %s", bad, err, AllowSetting)
		}
	}
}

// At dial time the policy is applied to the resolved addresses: a name
// answering with a private address is never connected to, and a name
// answering with both connects only to the permitted one. The dial hook
// refuses every connection, so nothing leaves the machine.
func TestDialChecksResolvedAddress(t *testing.T) {
	var mu sync.Mutex
	var dialled []string
	defer HookDials(func(_, address string) error {
		mu.Lock()
		defer mu.Unlock()
		dialled = append(dialled, address)
		return errors.New("test: no connection leaves this test")
	})()
	e, err := NewEgress("")
	if err != nil {
		t.Fatal(err)
	}
	e.resolve = fakeDNS(map[string][]string{
		"private.example": {"10.0.0.1", "::1"},
		"rebind.example":  {"10.1.2.3", "93.184.216.34"},
	})
	for _, tc := range []struct {
		url, refused string
		dialled      []string
	}{
		{"http://private.example/x", "private address 10.0.0.1", nil},
		{"http://169.254.169.254/latest/meta-data/", "cloud metadata", nil},
		{"http://[::ffff:7f00:1]:8080/", "loopback", nil},
		{"http://rebind.example/x", "", []string{"93.184.216.34:80"}},
	} {
		mu.Lock()
		dialled = nil
		mu.Unlock()
		resp, err := e.Client().Get(tc.url)
		if resp != nil {
			resp.Body.Close()
		}
		var refused *RefusedError
		if tc.refused != "" && (!errors.As(err, &refused) || !strings.Contains(err.Error(), tc.refused) || !strings.Contains(err.Error(), AllowSetting)) {
			t.Errorf("GET %s: err = %v, want refused (%s) naming %s", tc.url, err, tc.refused, AllowSetting)
		}
		mu.Lock()
		if strings.Join(dialled, ",") != strings.Join(tc.dialled, ",") {
			t.Errorf("GET %s dialled %v, want %v", tc.url, dialled, tc.dialled)
		}
		mu.Unlock()
	}
}

// The client refuses a redirect that changes scheme and a chain longer
// than maxRedirects.
func TestRedirectPolicy(t *testing.T) {
	t.Parallel()
	mk := func(u string) *http.Request {
		r, _ := http.NewRequest("GET", u, nil)
		return r
	}
	if err := checkRedirect(mk("http://a.example/"), []*http.Request{mk("https://a.example/")}); err == nil {
		t.Error("https → http redirect followed")
	}
	if err := checkRedirect(mk("https://b.example/"), []*http.Request{mk("https://a.example/")}); err != nil {
		t.Errorf("same-scheme redirect refused: %v", err)
	}
	via := []*http.Request{mk("https://a.example/"), mk("https://a.example/1"), mk("https://a.example/2")}
	if err := checkRedirect(mk("https://a.example/3"), via); err == nil {
		t.Error("fourth redirect followed")
	}
}
