package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// The compressed image (out/node.raw.zst) is a zstd stream of the raw image
// that any zstd decompresses to the raw (zstd -d, zstdcat), preceded by a
// skippable frame, which decompressors ignore, holding kubeboot's header:
//
//	kubeboot raw.zst v1
//	raw-size   <bytes of the raw image>
//	raw-sha256 <hex of the image's chunked sha256, see Digest>
//	zst-size   <bytes of the zstd stream after this frame>
//	zst-sha256 <hex of those bytes>
//
// flash reads the whole compressed stream against zst-size and zst-sha256
// before it touches the device, so a truncated or corrupt file is refused
// with the device unchanged; while writing, zstd's own frame checksum and
// raw-size and raw-sha256 catch what is left (a file changed meanwhile).
//
// The image's digest is chunked: the sha256 of the sha256s of its 4 MiB
// chunks. A chunk of zeros has a digest known in advance, so neither the
// builder nor flash hashes the gigabytes of zeros of an 8 GiB image with
// 1 GiB of data, and flash compares what it reads back chunk by chunk.

const (
	headerMagic = 0x184D2A5B // one of zstd's skippable frame magics
	headerTitle = "kubeboot raw.zst v1"
	// Fixed widths (20 digits, 64 hex), so the header is written before
	// the stream and filled in after it: the title line and four
	// "key-padded-to-11 value\n" lines.
	headerSize = len(headerTitle) + 1 + 2*(11+20+1) + 2*(11+64+1)
)

// Header is what the skippable frame says about the image.
type Header struct {
	RawSize   int64
	RawSHA256 string
	ZstSize   int64
	ZstSHA256 string
}

func (h Header) encode() []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint32(headerMagic))
	binary.Write(&b, binary.LittleEndian, uint32(headerSize))
	fmt.Fprintf(&b, "%s\nraw-size   %020d\nraw-sha256 %64s\nzst-size   %020d\nzst-sha256 %64s\n", headerTitle, h.RawSize, h.RawSHA256, h.ZstSize, h.ZstSHA256)
	return b.Bytes()
}

// readHeader reads the header frame at the start of r.
func readHeader(r io.Reader) (Header, error) {
	var h Header
	buf := make([]byte, 8+headerSize)
	if _, err := io.ReadFull(r, buf); err != nil {
		return h, fmt.Errorf("not a kubeboot raw.zst (no header: %v)", err)
	}
	if binary.LittleEndian.Uint32(buf) != headerMagic || binary.LittleEndian.Uint32(buf[4:]) != uint32(headerSize) {
		return h, errors.New("not a kubeboot raw.zst (no kubeboot header frame; made by kubeboot image build?)")
	}
	lines := strings.Split(strings.TrimSuffix(string(buf[8:]), "\n"), "\n")
	if len(lines) != 5 || lines[0] != headerTitle {
		return h, errors.New("kubeboot raw.zst header is damaged")
	}
	field := func(i int, key string) string {
		k, v, _ := strings.Cut(lines[i], " ")
		if k != key {
			return ""
		}
		return strings.TrimSpace(v)
	}
	var err1, err2 error
	h.RawSize, err1 = strconv.ParseInt(field(1, "raw-size"), 10, 64)
	h.RawSHA256 = field(2, "raw-sha256")
	h.ZstSize, err2 = strconv.ParseInt(field(3, "zst-size"), 10, 64)
	h.ZstSHA256 = field(4, "zst-sha256")
	if err1 != nil || err2 != nil || h.RawSize <= 0 || h.ZstSize <= 0 || !isSHA256(h.RawSHA256) || !isSHA256(h.ZstSHA256) {
		return h, errors.New("kubeboot raw.zst header is damaged")
	}
	return h, nil
}

func isSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// Compress writes the raw image at raw to out as a kubeboot raw.zst. Runs
// of data are compressed by the encoder, one zstd frame per run; runs of
// zeros (the raw's holes, found with SEEK_DATA and never read, and zero
// chunks) become frames of RLE blocks written here, 4 bytes per 128 KiB,
// so the gigabytes of zeros of a sparse image cost neither reads nor
// encoder time.
func Compress(ctx context.Context, raw, out string) (Header, error) {
	var h Header
	in, err := os.Open(raw)
	if err != nil {
		return h, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return h, err
	}
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return h, err
	}
	defer f.Close()
	if _, err := f.Write(Header{}.encode()); err != nil {
		return h, err
	}
	zsum := sha256.New()
	w := io.MultiWriter(f, zsum)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(true))
	if err != nil {
		return h, err
	}
	defer enc.Close()
	src := &rawSource{f: in}
	var digest Digest
	buf := make([]byte, chunk)
	var zeros int64 // pending zero run
	inData := false
	endData := func() error {
		if inData {
			inData = false
			return enc.Close()
		}
		return nil
	}
	for pos := int64(0); pos < st.Size(); {
		if err := ctx.Err(); err != nil {
			return h, err
		}
		n := min(int64(chunk), st.Size()-pos)
		p := buf[:n]
		hole, err := src.next(p)
		if err != nil {
			return h, err
		}
		if hole || isZero(p) {
			if err := endData(); err != nil {
				return h, err
			}
			digest.AddSum(chunkSum(zeroChunk[:n]))
			zeros += n
		} else {
			if err := writeZeroFrame(w, zeros); err != nil {
				return h, err
			}
			zeros = 0
			if !inData {
				enc.Reset(w)
				inData = true
			}
			digest.Add(p)
			if _, err := enc.Write(p); err != nil {
				return h, fmt.Errorf("compress %s: %w", raw, err)
			}
		}
		pos += n
	}
	if err := endData(); err != nil {
		return h, err
	}
	if err := writeZeroFrame(w, zeros); err != nil {
		return h, err
	}
	end, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return h, err
	}
	h = Header{RawSize: st.Size(), RawSHA256: digest.String(), ZstSize: end - int64(8+headerSize), ZstSHA256: hex.EncodeToString(zsum.Sum(nil))}
	if _, err := f.WriteAt(h.encode(), 0); err != nil {
		return h, err
	}
	return h, f.Close()
}

// rleBlock is zstd's largest block (Block_Maximum_Size, 128 KiB).
const rleBlock = 128 << 10

// writeZeroFrame writes a zstd frame (RFC 8878) of n zero bytes: no
// content size, a 128 KiB window (Window_Descriptor exponent 7), and RLE
// blocks of the byte 0, the last one flagged.
func writeZeroFrame(w io.Writer, n int64) error {
	if n == 0 {
		return nil
	}
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0xFD2FB528) // frame magic
	b = append(b, 0x00, 7<<3)                           // descriptor; window 2^(10+7)
	for n > 0 {
		size := min(n, rleBlock)
		n -= size
		hdr := uint32(size)<<3 | 1<<1 // Block_Type 1: RLE
		if n == 0 {
			hdr |= 1 // Last_Block
		}
		b = append(b, byte(hdr), byte(hdr>>8), byte(hdr>>16), 0x00)
	}
	_, err := w.Write(b)
	return err
}

// CheckCompressed reads the whole compressed stream of a raw.zst against
// its header: the size and sha256 of what follows the header frame. It
// decompresses nothing.
func CheckCompressed(path string) (Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, err
	}
	defer f.Close()
	h, err := readHeader(f)
	if err != nil {
		return h, fmt.Errorf("%s: %w", path, err)
	}
	sum := sha256.New()
	n, err := io.Copy(sum, f)
	if err != nil {
		return h, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case n < h.ZstSize:
		return h, fmt.Errorf("%s is truncated: %d of %d compressed bytes (copy it again)", path, n, h.ZstSize)
	case n > h.ZstSize:
		return h, fmt.Errorf("%s has %d bytes after the compressed image; it is not the file kubeboot wrote", path, n-h.ZstSize)
	case hex.EncodeToString(sum.Sum(nil)) != h.ZstSHA256:
		return h, fmt.Errorf("%s is corrupt: the sha256 of its compressed data is not the one in its header (copy it again)", path)
	}
	return h, nil
}

// zstReader decompresses a checked raw.zst and, at its end, checks the
// raw's size against the header: a mismatch is the read's error.
type zstReader struct {
	f   *os.File
	dec *zstd.Decoder
	h   Header
	n   int64
}

func openZst(path string, h Header) (*zstReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(int64(8+headerSize), io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	// One goroutine and a bounded window: the decoder's memory stays
	// small whatever the file claims.
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<30), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &zstReader{f: f, dec: dec, h: h}, nil
}

func (z *zstReader) Read(p []byte) (int, error) {
	n, err := z.dec.Read(p)
	z.n += int64(n)
	if z.n > z.h.RawSize {
		return n, fmt.Errorf("%s decompresses to more than the %d bytes its header says", z.f.Name(), z.h.RawSize)
	}
	if err == io.EOF {
		if z.n != z.h.RawSize {
			return n, fmt.Errorf("%s decompresses to %d bytes, its header says %d", z.f.Name(), z.n, z.h.RawSize)
		}
	} else if err != nil {
		err = fmt.Errorf("%s: decompress: %w", z.f.Name(), err)
	}
	return n, err
}

func (z *zstReader) Close() error {
	z.dec.Close()
	return z.f.Close()
}

// Digest is an image's chunked sha256: the sha256 of the sha256 of each
// chunk (4 MiB, the last one shorter), in order.
type Digest struct {
	h hash.Hash
}

var zeroChunkSum = sha256.Sum256(make([]byte, chunk))

// chunkSum is the sha256 of one chunk, without hashing a full chunk of zeros.
func chunkSum(p []byte) [sha256.Size]byte {
	if len(p) == chunk && isZero(p) {
		return zeroChunkSum
	}
	return sha256.Sum256(p)
}

// Add adds the next chunk.
func (d *Digest) Add(p []byte) { d.AddSum(chunkSum(p)) }

// AddSum adds the next chunk by its sha256.
func (d *Digest) AddSum(s [sha256.Size]byte) {
	if d.h == nil {
		d.h = sha256.New()
	}
	d.h.Write(s[:])
}

func (d *Digest) String() string {
	if d.h == nil {
		d.h = sha256.New()
	}
	return hex.EncodeToString(d.h.Sum(nil))
}
