package password

import (
	_ "embed"
	"strings"
	"sync"
)

// common.txt is a list of the most used passwords of at least 12
// characters (shorter ones fail the length rule anyway), lowercase, one per
// line, gathered from public breach-frequency lists.
//
//go:embed common.txt
var commonList string

var (
	commonOnce sync.Once
	commonSet  map[string]struct{}
)

func isCommon(pw string) bool {
	commonOnce.Do(func() {
		commonSet = make(map[string]struct{})
		for _, l := range strings.Split(commonList, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				commonSet[l] = struct{}{}
			}
		}
	})
	_, ok := commonSet[strings.ToLower(pw)]
	return ok
}
