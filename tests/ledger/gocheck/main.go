// Command gocheck holds the ledger to Go's own implementations of the standards:
// golang.org/x/mod/sumdb/note for signed notes and golang.org/x/mod/sumdb/tlog for
// RFC 6962 trees, tiles, inclusion (CheckRecord) and consistency (CheckTree) proofs.
//
//	gocheck note VKEY_FILE NOTE_FILE
//	gocheck log DIR OLD_CHECKPOINT_FILE RECEIPT_FILE...
//
// DIR is a static export of the log (python -m ledger tiles). Exit status 0 means
// every check passed; anything else prints the failure.
package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "gocheck: "+format+"\n", args...)
	os.Exit(1)
}

func read(path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	return data
}

func openNote(vkey string, msg []byte) *note.Note {
	verifier, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		fail("verifier key: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		fail("note.Open: %v", err)
	}
	return n
}

// parseCheckpoint reads a c2sp.org/tlog-checkpoint body: origin, size, base64 root.
func parseCheckpoint(text string) (string, tlog.Tree) {
	lines := strings.Split(text, "\n")
	if len(lines) < 4 {
		fail("checkpoint too short")
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	h, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("checkpoint root: %v", err)
	}
	return lines[0], tlog.Tree{N: n, Hash: h}
}

// dirTiles serves Go's tiles of height 8 from a C2SP tlog-tiles directory, whose
// paths are Go's without the height element: tile/8/L/N -> tile/L/N.
type dirTiles struct{ dir string }

func (d dirTiles) Height() int { return 8 }

func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		p := strings.Replace(t.Path(), "tile/8/", "tile/", 1)
		data, err := os.ReadFile(filepath.Join(d.dir, filepath.FromSlash(p)))
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (d dirTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

type receipt struct {
	entry      []byte
	index      int64
	proof      tlog.RecordProof
	checkpoint []byte
}

func parseReceipt(data []byte) receipt {
	i := bytes.Index(data, []byte("\n\n"))
	if i < 0 {
		fail("receipt: no blank line")
	}
	var r receipt
	r.checkpoint = data[i+2:]
	lines := strings.Split(string(data[:i]), "\n")
	if lines[0] != "c2sp.org/tlog-proof@v1" {
		fail("receipt: bad header %q", lines[0])
	}
	lines = lines[1:]
	if strings.HasPrefix(lines[0], "extra ") {
		entry, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(lines[0], "extra "))
		if err != nil {
			fail("receipt extra: %v", err)
		}
		r.entry = entry
		lines = lines[1:]
	}
	if !strings.HasPrefix(lines[0], "index ") {
		fail("receipt: no index line")
	}
	index, err := strconv.ParseInt(strings.TrimPrefix(lines[0], "index "), 10, 64)
	if err != nil {
		fail("receipt index: %v", err)
	}
	r.index = index
	for _, line := range lines[1:] {
		h, err := tlog.ParseHash(line)
		if err != nil {
			fail("receipt hash: %v", err)
		}
		r.proof = append(r.proof, h)
	}
	return r
}

func main() {
	if len(os.Args) >= 4 && os.Args[1] == "note" {
		n := openNote(string(read(os.Args[2])), read(os.Args[3]))
		fmt.Printf("ok note verified by %s\n", n.Sigs[0].Name)
		return
	}
	if len(os.Args) < 4 || os.Args[1] != "log" {
		fail("usage: gocheck note VKEY NOTE | gocheck log DIR OLD_CHECKPOINT RECEIPT...")
	}
	dir := os.Args[2]
	vkey := string(read(filepath.Join(dir, "vkey")))
	latest := openNote(vkey, read(filepath.Join(dir, "checkpoint")))
	origin, tree := parseCheckpoint(latest.Text)
	reader := tlog.TileHashReader(tree, dirTiles{dir})
	root, err := tlog.TreeHash(tree.N, reader)
	if err != nil || root != tree.Hash {
		fail("TreeHash from tiles: %v (%v vs %v)", err, root, tree.Hash)
	}
	fmt.Printf("ok checkpoint %s size %d: tiles give its root\n", origin, tree.N)

	old := openNote(vkey, read(os.Args[3]))
	_, oldTree := parseCheckpoint(old.Text)
	treeProof, err := tlog.ProveTree(tree.N, oldTree.N, reader)
	if err != nil {
		fail("ProveTree: %v", err)
	}
	if err := tlog.CheckTree(treeProof, tree.N, tree.Hash, oldTree.N, oldTree.Hash); err != nil {
		fail("CheckTree %d -> %d: %v", oldTree.N, tree.N, err)
	}
	fmt.Printf("ok CheckTree %d -> %d\n", oldTree.N, tree.N)

	for _, path := range os.Args[4:] {
		r := parseReceipt(read(path))
		cp := openNote(vkey, r.checkpoint)
		_, cpTree := parseCheckpoint(cp.Text)
		leaf := tlog.RecordHash(r.entry)
		if err := tlog.CheckRecord(r.proof, cpTree.N, cpTree.Hash, r.index, leaf); err != nil {
			fail("CheckRecord %s: %v", path, err)
		}
		if cpTree.N == tree.N {
			proof, err := tlog.ProveRecord(tree.N, r.index, reader)
			if err != nil {
				fail("ProveRecord: %v", err)
			}
			if len(proof) != len(r.proof) {
				fail("ProveRecord from tiles differs from the receipt for %d", r.index)
			}
			for i := range proof {
				if proof[i] != r.proof[i] {
					fail("ProveRecord from tiles differs from the receipt for %d", r.index)
				}
			}
		}
		fmt.Printf("ok CheckRecord index %d in size %d\n", r.index, cpTree.N)
	}
}
