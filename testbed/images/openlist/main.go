// Command openlist builds the real OpenList server from the Go module proxy.
//
// OpenList's go.mod has replace directives, so `go install ...@version` refuses
// to build it; this wrapper module requires it and repeats those replaces.
package main

import "github.com/OpenListTeam/OpenList/v4/cmd"

func main() {
	cmd.Execute()
}
