package destinations

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// AllowSetting names the setting that lets destinations reach addresses the
// egress policy refuses by default (errors point operators at it).
const AllowSetting = "SEGHUB_DESTINATION_ALLOW"

// blockedRanges are refused by default: loopback, "this network",
// private, carrier-grade NAT, link-local (cloud metadata at 169.254.169.254
// and fd00:ec2::254 included), unique local, multicast, broadcast and the
// unspecified addresses. IPv4-mapped IPv6 addresses are unmapped first and
// NAT64 ones checked by the IPv4 address they embed.
var blockedRanges = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT)"},
	{netip.MustParsePrefix("169.254.169.254/32"), "cloud metadata"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // 255.255.255.255 included
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible"}, // deprecated; would reach an IPv4 host by other means
	{netip.MustParsePrefix("fd00:ec2::254/128"), "cloud metadata"},
	{netip.MustParsePrefix("fc00::/7"), "unique local (private)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// RefusedRange reports why ip is refused by default ("" when it is not): the
// range it falls in.
func RefusedRange(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("") // a prefix never contains a zoned address
	if nat64.Contains(ip) {
		b := ip.As16()
		ip = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	if !ip.IsValid() {
		return "invalid"
	}
	for _, r := range blockedRanges {
		if r.prefix.Contains(ip) {
			return r.what
		}
	}
	return ""
}

// RefusedError is an outbound request the egress policy stopped before any
// connection was made.
type RefusedError struct {
	Host   string // as the URL named it
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("destination %s refused by the egress policy: %s (list the host in %s to allow an on-premises destination)", e.Host, e.Reason, AllowSetting)
}

// Egress is the policy for outbound HTTP to destinations: addresses in the
// refused ranges are reachable only when the allow list names their host,
// host:port or range. It is enforced when dialling, on the resolved address
// (so a DNS answer that changes after a URL was checked, or a redirect,
// cannot get around it), and its client follows redirects only within one
// scheme.
type Egress struct {
	hosts  map[string]bool // lower-case host, or host:port
	ranges []netip.Prefix
	client *http.Client
	// resolve is the DNS lookup (tests replace it).
	resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// tracer records destination requests (nil: the global provider's).
	tracer trace.Tracer
}

// SetTracer makes adapters using this policy record their requests with t
// (set once, before the first adapter is built).
func (e *Egress) SetTracer(t trace.Tracer) { e.tracer = t }

// NewEgress parses allow: comma-separated host names, host:port pairs
// (IPv6 in brackets), IP addresses and CIDR ranges.
func NewEgress(allow string) (*Egress, error) {
	e := &Egress{hosts: map[string]bool{}, resolve: func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}}
	for _, item := range strings.Split(allow, ",") {
		item = strings.ToLower(strings.TrimSpace(item))
		if item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			e.ranges = append(e.ranges, p.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(item); err == nil {
			e.ranges = append(e.ranges, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			continue
		}
		host, port, err := net.SplitHostPort(item)
		if err != nil {
			host, port = item, ""
		}
		if !validHost(host) || (port != "" && !validPort(port)) {
			return nil, fmt.Errorf("%s: %q is not a host, host:port, IP address or CIDR range", AllowSetting, item)
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			host = ip.Unmap().String()
		}
		if port != "" {
			host = net.JoinHostPort(host, port)
		}
		e.hosts[host] = true
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: observeDial}
	tr := &http.Transport{
		Proxy: nil, // a proxy would resolve and connect on our behalf, past the policy
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return e.dial(ctx, dialer, network, addr)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	e.client = &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: checkRedirect}
	return e, nil
}

func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	labels := strings.Split(h, ".")
	// No top-level domain is numeric: "127.1", "2130706433" or "0x7f.1" are
	// IPv4 shorthands some resolvers expand, not names.
	if last := labels[len(labels)-1]; strings.HasPrefix(last, "0x") || strings.Trim(last, "0123456789") == "" {
		return false
	}
	for _, label := range labels {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func validPort(p string) bool {
	n := 0
	for _, r := range p {
		if r < '0' || r > '9' {
			return false
		}
		n = n*10 + int(r-'0')
		if n > 65535 {
			return false
		}
	}
	return n > 0
}

// maxRedirects a destination may chain before the request fails.
const maxRedirects = 3

// checkRedirect follows a redirect only within one scheme (https never
// becomes http, nor the reverse); the target's address is checked when it
// is dialled, like any other.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return &RefusedError{Host: req.URL.Host, Reason: fmt.Sprintf("more than %d redirects", maxRedirects)}
	}
	if req.URL.Scheme != via[0].URL.Scheme {
		return &RefusedError{Host: req.URL.Host, Reason: fmt.Sprintf("redirect from %s to %s", via[0].URL.Scheme, req.URL.Scheme)}
	}
	return nil
}

// Client is the HTTP client every destination request goes through.
func (e *Egress) Client() *http.Client { return e.client }

// hostAllowed: the allow list names host or host:port.
func (e *Egress) hostAllowed(host, port string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}
	return e.hosts[host] || (port != "" && e.hosts[net.JoinHostPort(host, port)])
}

// addrRefused returns why ip may not be reached ("" when it may).
func (e *Egress) addrRefused(ip netip.Addr) string {
	ip = ip.Unmap().WithZone("")
	for _, r := range e.ranges {
		if r.Contains(ip) {
			return ""
		}
	}
	if why := RefusedRange(ip); why != "" {
		return why + " address " + ip.String()
	}
	return ""
}

// lookup returns host's addresses (host itself when it is an IP address).
func (e *Egress) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	return e.resolve(ctx, host)
}

// dial connects to the first of addr's resolved addresses the policy
// allows, by address, so the name is not resolved a second time.
func (e *Egress) dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if e.hostAllowed(host, port) {
		return d.DialContext(ctx, network, addr)
	}
	ips, err := e.lookup(ctx, strings.TrimSuffix(strings.ToLower(host), "."))
	if err != nil {
		return nil, err
	}
	var refused string
	var last error
	for _, ip := range ips {
		if why := e.addrRefused(ip); why != "" {
			if refused == "" {
				refused = why
			}
			continue
		}
		c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		last = err
	}
	if last != nil {
		return nil, last
	}
	if refused == "" {
		refused = "no address"
	}
	return nil, &RefusedError{Host: host, Reason: refused}
}

// CheckURL refuses early what the dial would refuse later: a URL that is
// not absolute http(s), carries a user name, or whose host is (or resolves
// to) a refused address. A name that does not resolve now passes: it is
// checked again on every dial.
func (e *Egress) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return errors.New("must be an absolute http:// or https:// URL")
	}
	if u.User != nil {
		return errors.New("must not carry a user name or password; authenticate with the signing secret")
	}
	host, port := strings.TrimSuffix(strings.ToLower(u.Hostname()), "."), u.Port()
	if port != "" && !validPort(port) {
		return fmt.Errorf("port %q is not a port number", port)
	}
	if e.hostAllowed(host, port) {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil && !validHost(host) {
		return fmt.Errorf("host %q is not a host name or IP address", host)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := e.lookup(ctx, host)
	if err != nil {
		return nil
	}
	for _, ip := range ips {
		if why := e.addrRefused(ip); why != "" {
			return &RefusedError{Host: host, Reason: why}
		}
	}
	return nil
}

var (
	defaultEgressOnce sync.Once
	defaultEgress     *Egress
)

// DefaultEgress is the policy with an empty allow list: every refused range
// stays refused. Adapters built without a policy use it.
func DefaultEgress() *Egress {
	defaultEgressOnce.Do(func() {
		var err error
		if defaultEgress, err = NewEgress(""); err != nil {
			panic(err)
		}
	})
	return defaultEgress
}

var dialHook atomic.Pointer[func(network, address string) error]

// HookDials calls f with every address a destination connection is about to
// connect to (after the policy passed it); an error from f aborts the dial.
// Tests use it to prove refused addresses are never dialled. The returned
// func restores the hook f replaced.
func HookDials(f func(network, address string) error) (restore func()) {
	prev := dialHook.Swap(&f)
	return func() { dialHook.CompareAndSwap(&f, prev) }
}

func observeDial(network, address string, _ syscall.RawConn) error {
	if f := dialHook.Load(); f != nil {
		return (*f)(network, address)
	}
	return nil
}
