package experiments

import (
	"fmt"
	"strings"
)

// Suggest returns the candidate closest to word, or "" when none is close:
// an edit distance of at most 2, or a shared prefix of at least four
// letters (verifiers → verify). The CLI uses it for commands and flags.
func Suggest(word string, candidates []string) string { return suggest(word, candidates) }

func suggest(word string, candidates []string) string {
	w := strings.ToLower(word)
	best, bestScore := "", 100
	for _, c := range candidates {
		lc := strings.ToLower(c)
		score := 100
		if d := levenshtein(w, lc); d <= 2 {
			score = d
		} else if p := commonPrefix(w, lc); p >= 4 || (p >= 3 && p == min(len(w), len(lc))) {
			score = 3
		}
		if score < bestScore {
			best, bestScore = c, score
		}
	}
	return best
}

// didYouMean is " (did you mean "x"?)" or "".
func didYouMean(word string, candidates []string) string {
	if s := suggest(word, candidates); s != "" {
		return fmt.Sprintf(" (did you mean %q?)", s)
	}
	return ""
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func levenshtein(a, b string) int {
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

// oneOf lists words as "a, b or c".
func oneOf(words []string) string {
	switch len(words) {
	case 0:
		return ""
	case 1:
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
