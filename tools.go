//go:build tools

package c360

// Pins the code generator's version in go.mod.
import _ "github.com/99designs/gqlgen"
