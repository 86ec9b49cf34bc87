package whatsapp_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocsSetupShowsTheVerifyToken runs the shell block of docs/connectors.md's
// "Set up the Meta app webhook" step 1 as a reader would, with stand-ins for
// c360 and openssl: the verify token it stores must be printed, since step 2
// has the reader enter it in Meta's console and c360 never shows it again;
// and the app secret is still read from standard input (-), not the command
// line.
func TestDocsSetupShowsTheVerifyToken(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	doc, err := os.ReadFile("../../docs/connectors.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "### Set up the Meta app webhook\n")
	if !ok {
		t.Fatal("docs/connectors.md: no ### Set up the Meta app webhook")
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatal("docs/connectors.md: no sh block under ### Set up the Meta app webhook")
	}
	block, _, _ := strings.Cut(rest, "```")

	dir := t.TempDir()
	const token = "0123456789abcdef0123456789abcdef"
	argsFile := filepath.Join(dir, "c360.args")
	stub := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	stub("openssl", "echo "+token+"\n")
	// The stand-in c360 records its arguments, one a line, and what it read.
	stub("c360", `for a in "$@"; do printf '%s\n' "$a"; done > "`+argsFile+`"
read -r secret; printf 'stdin:%s\n' "$secret" >> "`+argsFile+"\"\n")
	cmd := exec.Command(bash, "-e", "-c", block)
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	cmd.Stdin = strings.NewReader("app-secret-from-stdin\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the block failed: %v\n%s\n%s", err, block, out)
	}
	raw, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatalf("the block did not run c360: %v\n%s", err, block)
	}
	args := strings.Split(strings.TrimSpace(string(raw)), "\n")
	stored := ""
	for i, a := range args {
		if a == "--whatsapp-verify-token" && i+1 < len(args) {
			stored = args[i+1]
		}
	}
	if stored != token {
		t.Fatalf("c360 got --whatsapp-verify-token %q, want %q (args %q)", stored, token, args)
	}
	if !strings.Contains(string(out), token) {
		t.Errorf("the block stores verify token %s but never prints it, and step 2 needs it:\n%s\noutput: %q", token, block, out)
	}
	if !strings.Contains(strings.Join(args, " "), "--whatsapp-app-secret -") || args[len(args)-1] != "stdin:app-secret-from-stdin" {
		t.Errorf("the app secret is not read from standard input: args %q", args)
	}
}
