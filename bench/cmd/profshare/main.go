// Command profshare splits a CPU profile of the serving path into who spends
// it: seghub's own code, protobuf, grpc-go's transport (gRPC profiles), or
// otelhttp and net/http (REST profiles), GC and the rest. Each sample goes to
// the first category (in the order listed) one of its stack's frames matches,
// so a sample under seghub's handler that allocates is seghub's.
//
//	cd bench && go run ./cmd/profshare -kind grpc <binary> <dir>/grpc.pb.gz
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

type category struct {
	name string
	re   *regexp.Regexp
}

var kinds = map[string][]category{
	"grpc": {
		{"seghub's code (interceptors, auth, stats handler, handler, index)", regexp.MustCompile(`seghub/seghub/(pkg|services)/`)},
		{"protobuf encoding and decoding", regexp.MustCompile(`google\.golang\.org/protobuf`)},
		{"grpc-go: transport, HTTP/2 framing, streams (with their syscalls and allocation)", regexp.MustCompile(`google\.golang\.org/grpc|golang\.org/x/net/http2`)},
		{"GC background marking", regexp.MustCompile(`gcBgMarkWorker`)},
		{"other (scheduler, other goroutines)", regexp.MustCompile(`.`)},
	},
	"rest": {
		{"seghub's code (gateway handler, auth, in-process call, targeting)", regexp.MustCompile(`seghub/seghub/`)},
		{"otelhttp middleware (its own work)", regexp.MustCompile(`otelhttp|httpsnoop`)},
		{"net/http server (read, parse, write syscalls, connection)", regexp.MustCompile(`net/http\.|net\.\(\*conn\)|bufio`)},
		{"GC background marking", regexp.MustCompile(`gcBgMarkWorker`)},
		{"other (scheduler, other goroutines)", regexp.MustCompile(`.`)},
	},
}

var sampleLine = regexp.MustCompile(`^\s*([\d.]+)(ns|us|µs|ms|s)\s+(.*)$`)

func main() {
	kind := flag.String("kind", "grpc", "grpc or rest")
	flag.Parse()
	cats, ok := kinds[*kind]
	if !ok || flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: profshare -kind grpc|rest <binary> <profile>")
		os.Exit(2)
	}
	out, err := exec.Command("go", "tool", "pprof", "-traces", flag.Arg(0), flag.Arg(1)).Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "profshare: pprof:", err)
		os.Exit(1)
	}
	spent := make([]time.Duration, len(cats))
	var total time.Duration
	for _, block := range strings.Split(string(out), "-----------+-------------------------------------------------------") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		m := sampleLine.FindStringSubmatch(lines[0])
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		unit := map[string]time.Duration{"ns": time.Nanosecond, "us": time.Microsecond, "µs": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[2]]
		d := time.Duration(v * float64(unit))
		frames := append([]string{m[3]}, lines[1:]...)
		total += d
		for i, c := range cats {
			if matches(c.re, frames) {
				spent[i] += d
				break
			}
		}
	}
	if total == 0 {
		fmt.Fprintln(os.Stderr, "profshare: no samples")
		os.Exit(1)
	}
	for i, c := range cats {
		fmt.Printf("| %s | %.1f %% |\n", c.name, 100*float64(spent[i])/float64(total))
	}
	fmt.Printf("| (samples) | %v |\n", total)
}

func matches(re *regexp.Regexp, frames []string) bool {
	for _, f := range frames {
		if re.MatchString(f) {
			return true
		}
	}
	return false
}
