// Command mc builds the real MinIO client from the Go module proxy, as upstream's main.go does.
package main

import (
	"os"

	mc "github.com/minio/mc/cmd"
	"github.com/minio/pkg/v3/console"
)

func main() {
	if e := mc.Main(os.Args); e != nil {
		console.Fatalln(e)
	}
}
