package machineconfig

import (
	"fmt"
	"strings"
)

// Suggestions are for typos in names: a longer word or a longer list of
// candidates (a hostile config's thousand links) gets none, which keeps
// the edit distances a config can ask for small.
const (
	maxSuggestWord       = 64
	maxSuggestCandidates = 256
)

// separators are ignored when comparing names: macaddress vs macAddress.
var separators = strings.NewReplacer("-", "", "_", "")

func normName(s string) string { return separators.Replace(strings.ToLower(s)) }

// suggest returns the candidate closest to word when it is close enough to
// be a likely typo, or "" when none is.
func suggest(word string, candidates []string) string {
	if len(word) > maxSuggestWord || len(candidates) > maxSuggestCandidates {
		return ""
	}
	w := normName(word)
	best, bestDist := "", -1
	for _, c := range candidates {
		if len(c) > maxSuggestWord {
			continue
		}
		nc := normName(c)
		if nc == w {
			return c // differs only in case or separators: macaddress vs macAddress
		}
		d := editDistance(w, nc)
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	// A unique abbreviation: "ClusterConfig" for "ClusterConfiguration".
	if len(w) >= 5 {
		var prefixed []string
		for _, c := range candidates {
			if len(c) <= maxSuggestWord && strings.HasPrefix(normName(c), w) {
				prefixed = append(prefixed, c)
			}
		}
		if len(prefixed) == 1 && bestDist > min(len(w)/3, 3) {
			return prefixed[0]
		}
	}
	// Allow one edit per three letters, at most three: "adresses" finds
	// "addresses", "foo" does not find "mtu".
	limit := min(len(w)/3, 3)
	if bestDist >= 0 && bestDist <= limit && bestDist > 0 {
		return best
	}
	return ""
}

// didYouMean formats a suggestion as a message suffix.
func didYouMean(word string, candidates []string) string {
	if s := suggest(word, candidates); s != "" {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of neighbours cost one.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
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
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// quoteList formats names as "a", "b" or "c".
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	switch len(q) {
	case 0:
		return ""
	case 1:
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
