package kind_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"strconv"
	"testing"

	"github.com/berthhq/berth/controller/internal/audit/kind"
)

var dotted = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)

// Every kind follows the one scheme, once.
func TestKindsAreDottedAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range kind.All {
		if !dotted.MatchString(k) {
			t.Errorf("kind %q is not dotted lowercase (subject.what_happened)", k)
		}
		if seen[k] {
			t.Errorf("kind %q listed twice", k)
		}
		seen[k] = true
	}
}

// Every constant of the package is in All, so a kind added as a constant
// but not listed is caught here rather than by a refused row later.
func TestEveryConstantIsListed(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "kind.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, sp := range g.Specs {
			for _, v := range sp.(*ast.ValueSpec).Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					continue
				}
				s, _ := strconv.Unquote(lit.Value)
				n++
				if !kind.Known(s) {
					t.Errorf("constant %q is not in kind.All", s)
				}
			}
		}
	}
	if n != len(kind.All) {
		t.Errorf("%d constants, %d kinds in All", n, len(kind.All))
	}
}
