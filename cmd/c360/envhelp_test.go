package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// envName is a C360_ variable's name as the code reads it: a string literal.
var envName = regexp.MustCompile(`"(C360_[A-Z0-9_]+)"`)

// readEnvNames lists the C360_ variables the program's code reads (every
// non-test Go file of the module but the benchmark harness).
func readEnvNames(t *testing.T) []string {
	t.Helper()
	var names []string
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "bench" || n == "testdata" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range envName.FindAllStringSubmatch(string(src), -1) {
			if !slices.Contains(names, m[1]) {
				names = append(names, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if len(names) < 20 || !slices.Contains(names, "C360_ADDR") {
		t.Fatalf("found only %v: the scan is broken", names)
	}
	return names
}

// `c360 help` names every C360_ variable the code reads, and only those; so
// does README.md's Configuration table (where a row may shorten names
// sharing a prefix: `C360_GRAPHQL_MAX_TOKENS`, `_FIELDS`).
func TestHelpAndREADMENameEveryVariable(t *testing.T) {
	read := readEnvNames(t)

	var out bytes.Buffer
	m := NewMain(&out, &out, func(string) string { return "" })
	if err := m.Run(context.Background(), []string{"help"}); err != nil {
		t.Fatal(err)
	}
	inHelp := regexp.MustCompile(`C360_[A-Z0-9_]+[A-Z0-9]`).FindAllString(out.String(), -1)
	for _, n := range read {
		if !slices.Contains(inHelp, n) {
			t.Errorf("c360 help does not name %s, which the server reads", n)
		}
	}
	for _, n := range inHelp {
		if !slices.Contains(read, n) {
			t.Errorf("c360 help names %s, which no code reads", n)
		}
	}

	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(readme), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md: no ## Configuration")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	rows := strings.Split(table, "\n")
	named := func(n string) bool {
		for _, row := range rows {
			if strings.Contains(row, "`"+n+"`") {
				return true
			}
			// A shortened name: `C360_X_Y_A`, `_B` names C360_X_Y_B.
			for i := len("C360_"); i < len(n); i++ {
				if n[i] == '_' && strings.Contains(row, "`"+n[:i]) && strings.Contains(row, "`"+n[i:]+"`") {
					return true
				}
			}
		}
		return false
	}
	for _, n := range read {
		if !named(n) {
			t.Errorf("README.md's Configuration does not name %s, which the server reads", n)
		}
	}
}
