package syncengine

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/seghub/seghub/pkg/apperr"
	"github.com/seghub/seghub/pkg/destinations"
)

// closeMatchLimit bounds how many property names are scanned for suggestions.
const closeMatchLimit = 1000

// checkIdentity accepts an identity property a run can read: user_id (the
// user's own id), the destination's documented property (no user may hold it
// yet: a tag attaches it with identify), or one that some user holds. from
// says where a defaulted value came from, for the error.
func (e *Engine) checkIdentity(ctx context.Context, env, prop, from string, t destinations.Type) error {
	why, err := e.IdentityProblem(ctx, env, prop, from, t)
	if err != nil || why == "" {
		return err
	}
	return apperr.Invalid("identity_property", why)
}

// IdentityProblem says why checkIdentity would refuse prop, with close
// matches among the properties users hold, or "" when it is accepted.
// Connections' identity properties are checked with it too
// (CheckIdentityProperty), so both refuse with the same words.
func (e *Engine) IdentityProblem(ctx context.Context, env, prop, from string, t destinations.Type) (string, error) {
	if prop == "user_id" || prop == t.DefaultIdentity {
		return "", nil
	}
	held, err := e.data.HoldsProperty(ctx, env, prop)
	if err != nil || held {
		return "", err
	}
	stats, _, err := e.data.UserPropertyStats(ctx, env, closeMatchLimit)
	if err != nil {
		return "", err
	}
	names := []string{"user_id"}
	if t.DefaultIdentity != "user_id" {
		names = append(names, t.DefaultIdentity)
	}
	for _, s := range stats {
		names = append(names, s.Name)
	}
	msg := fmt.Sprintf("no user holds property %q%s", prop, from)
	if close := closeMatches(prop, names); len(close) > 0 {
		msg += fmt.Sprintf("; did you mean %s?", quoteAll(close))
	} else {
		msg += "; list the properties users hold with GET /v1/user-properties"
	}
	return fmt.Sprintf("%s (user_id and %s's own %q are always accepted)", msg, t.DisplayName, t.DefaultIdentity), nil
}

// closeMatches returns the names equal to want but for case, sharing a
// case-insensitive prefix with it, or within a small edit distance, closest
// first and at most five.
func closeMatches(want string, names []string) []string {
	w := strings.ToLower(want)
	type scored struct {
		name string
		d    int
	}
	var out []scored
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		l := strings.ToLower(n)
		d := editDistance(w, l)
		switch {
		case l == w:
			d = 0
		case len(w) >= 3 && (strings.HasPrefix(l, w) || strings.HasPrefix(w, l)):
			d = min(d, 1)
		case d > max(2, len(w)/3):
			continue
		}
		out = append(out, scored{n, d})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].d < out[j].d })
	var names5 []string
	for i := 0; i < len(out) && i < 5; i++ {
		names5 = append(names5, out[i].name)
	}
	return names5
}

// editDistance is the Levenshtein distance between a and b, in runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}
