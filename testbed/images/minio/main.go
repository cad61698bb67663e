// Command minio builds the real MinIO server from the Go module proxy, as upstream's main.go does.
package main

import (
	"os"

	minio "github.com/minio/minio/cmd"
)

func main() {
	minio.Main(os.Args)
}
