// Package flash writes a node image onto a whole disk, as kubeboot flash
// does: from the raw image (its holes skipped with SEEK_DATA) or from the
// compressed raw.zst (checked before the device is touched), with O_DIRECT
// so progress is the device's, then reads the disk back and compares its
// sha256 with the image's. Ranges of the image that are zeros (holes, or
// zero chunks of the stream) are zeroed on the device without sending
// zeros when it can (write-zeroes), else only where the device holds
// something else: a disk with old data reads back as the image, a blank
// one costs reads only.
package flash

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"kubeboot.dev/kubeboot/image/progress"
)

// chunk is the unit of reading, writing and zero detection.
const chunk = 4 << 20

// Image is a disk image to flash.
type Image struct {
	Path string
	// Size is the raw image's size: what the device receives.
	Size int64
	// Stored is what the file takes: the raw's allocated bytes, or the
	// compressed file's size.
	Stored     int64
	Compressed bool
	header     Header
}

// Open opens a raw image, or a raw.zst (by its .zst extension), whose
// whole compressed stream is checked against its header here, before any
// device is touched.
func Open(path string) (*Image, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a file", path)
	}
	if strings.HasSuffix(path, ".zst") {
		h, err := CheckCompressed(path)
		if err != nil {
			return nil, err
		}
		return &Image{Path: path, Size: h.RawSize, Stored: st.Size(), Compressed: true, header: h}, nil
	}
	var stored int64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		stored = sys.Blocks * 512
	}
	return &Image{Path: path, Size: st.Size(), Stored: stored}, nil
}

// Result says what Write did.
type Result struct {
	// Digest is the image's chunked sha256 (see Digest), which the
	// device's first Size bytes read back with, chunk by chunk.
	Digest string
	// Data is the bytes of image data written; Zeroed the bytes of zero
	// ranges, of which ZeroWritten were written as zeros (the device had
	// other data there and cannot zero ranges by itself).
	Data, Zeroed, ZeroWritten int64
}

// NotFlashed wraps every error of Write after the device was opened:
// whatever is on it now is not the image.
type NotFlashed struct {
	Device string
	Err    error
}

func (e *NotFlashed) Error() string {
	return fmt.Sprintf("%v; %s is NOT flashed", e.Err, e.Device)
}

func (e *NotFlashed) Unwrap() error { return e.Err }

// CheckFits says whether img, plus extra bytes after it, fits on dev.
func CheckFits(img *Image, dev *Device, extra int64) error {
	if img.Size%dev.LogicalBlock != 0 {
		return fmt.Errorf("%s: its size %d is not a multiple of %s's sector size %d", img.Path, img.Size, dev.Path, dev.LogicalBlock)
	}
	if need := img.Size + extra; need > dev.Size {
		return fmt.Errorf("%s needs %s, %s has %s", img.Path, HumanBytes(need), dev.Path, HumanBytes(dev.Size))
	}
	return nil
}

// Write writes img onto dev and reads it back. Progress gets a "write"
// and a "verify" task (byte counts of the image).
func Write(ctx context.Context, img *Image, dev *Device, rep progress.Reporter) (Result, error) {
	var res Result
	if err := CheckFits(img, dev, 0); err != nil {
		return res, err
	}
	src, err := openSource(img)
	if err != nil {
		return res, err
	}
	defer src.close()
	// O_EXCL claims the disk: the kernel refuses while anything holds
	// it (a mount that appeared since Inspect, a partition in use).
	fd, err := unix.Open(dev.Path, unix.O_RDWR|unix.O_EXCL|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return res, fmt.Errorf("%s is in use (the kernel refuses to give it out exclusively): %w", dev.Path, err)
		}
		return res, fmt.Errorf("open %s: %w", dev.Path, err)
	}
	defer unix.Close(fd)
	w := &writer{ctx: ctx, fd: fd, dev: dev}
	if w.buf, err = alignedBuffer(chunk); err != nil {
		return res, err
	}
	defer unix.Munmap(w.buf)
	if w.scratch, err = alignedBuffer(chunk); err != nil {
		return res, err
	}
	defer unix.Munmap(w.scratch)
	fail := func(err error) (Result, error) {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted (%w)", ctx.Err())
		}
		return res, &NotFlashed{Device: dev.Path, Err: err}
	}

	task := rep.Start("write "+dev.Path, img.Size)
	err = w.copy(src, img.Size, task)
	if err == nil {
		err = unix.Fsync(fd)
	}
	task.Done(err)
	if err != nil {
		return fail(err)
	}
	var digest Digest
	for _, s := range w.sums {
		digest.AddSum(s)
	}
	res = Result{Digest: digest.String(), Data: w.data, Zeroed: w.zeroed, ZeroWritten: w.zeroWritten}
	if img.Compressed && res.Digest != img.header.RawSHA256 {
		return fail(fmt.Errorf("%s decompressed to data whose sha256 is not the one in its header (was the file changed while flashing?)", img.Path))
	}

	task = rep.Start("verify "+dev.Path, img.Size)
	err = w.verify(img.Size, task)
	task.Done(err)
	if err != nil {
		return fail(err)
	}
	return res, nil
}

// source yields the image chunk by chunk.
type source interface {
	// next fills p (len(p) bytes, the last chunk shorter) or reports that
	// the chunk is a hole, all zeros, without reading it.
	next(p []byte) (hole bool, err error)
	// finish reads past the end: a compressed image's checks run there.
	finish() error
	close() error
}

func openSource(img *Image) (source, error) {
	if img.Compressed {
		z, err := openZst(img.Path, img.header)
		if err != nil {
			return nil, err
		}
		return &zstSource{z}, nil
	}
	f, err := os.Open(img.Path)
	if err != nil {
		return nil, err
	}
	return &rawSource{f: f}, nil
}

type rawSource struct {
	f   *os.File
	pos int64
}

func (r *rawSource) next(p []byte) (bool, error) {
	start := r.pos
	r.pos += int64(len(p))
	// The next data at or after start; ENXIO: none up to the end.
	data, err := unix.Seek(int(r.f.Fd()), start, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) || err == nil && data >= r.pos {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: find data: %w", r.f.Name(), err)
	}
	if _, err := r.f.ReadAt(p, start); err != nil {
		return false, fmt.Errorf("read %s: %w", r.f.Name(), err)
	}
	return false, nil
}

func (r *rawSource) finish() error { return nil }
func (r *rawSource) close() error  { return r.f.Close() }

type zstSource struct{ z *zstReader }

func (s *zstSource) next(p []byte) (bool, error) {
	if _, err := io.ReadFull(s.z, p); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return false, fmt.Errorf("%s ends early: %w", s.z.f.Name(), err)
		}
		return false, err
	}
	return false, nil
}

func (s *zstSource) finish() error {
	var b [1]byte
	if n, err := s.z.Read(b[:]); n > 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("%s decompresses to more than its header says", s.z.f.Name())
		}
		return err
	}
	return nil
}

func (s *zstSource) close() error { return s.z.Close() }

type writer struct {
	ctx          context.Context
	fd           int
	dev          *Device
	buf, scratch []byte
	sums         [][sha256.Size]byte // of each chunk written
	// pending is a zero range [zeroFrom, zeroTo) not yet applied.
	zeroFrom, zeroTo          int64
	data, zeroed, zeroWritten int64
}

// zeroChunk is a chunk of zeros.
var zeroChunk = make([]byte, chunk)

func (w *writer) copy(src source, size int64, task progress.Task) error {
	for pos := int64(0); pos < size; {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		n := min(int64(chunk), size-pos)
		p := w.buf[:n]
		hole, err := src.next(p)
		if err != nil {
			return err
		}
		if hole || isZero(p) {
			w.sums = append(w.sums, chunkSum(zeroChunk[:n]))
			if err := w.zero(pos, pos+n); err != nil {
				return err
			}
		} else {
			w.sums = append(w.sums, sha256.Sum256(p))
			if err := w.writeData(p, pos); err != nil {
				return err
			}
		}
		task.Write(zeroChunk[:n])
		pos += n
	}
	if err := src.finish(); err != nil {
		return err
	}
	return w.flushZeros()
}

// block is the unit of zero detection within a chunk of data: the zero
// blocks of a partly used chunk are not written either.
const block = 64 << 10

// writeData writes the blocks of chunk p (at pos) that are not zero and
// makes the others zero ranges.
func (w *writer) writeData(p []byte, pos int64) error {
	n := int64(len(p))
	for off := int64(0); off < n; {
		end := min(off+block, n)
		if isZero(p[off:end]) {
			if err := w.zero(pos+off, pos+end); err != nil {
				return err
			}
			off = end
			continue
		}
		for end < n && !isZero(p[end:min(end+block, n)]) {
			end = min(end+block, n)
		}
		if err := w.flushZeros(); err != nil {
			return err
		}
		if err := pwriteAll(w.fd, p[off:end], pos+off); err != nil {
			return fmt.Errorf("write %s at %d: %w", w.dev.Path, pos+off, err)
		}
		w.data += end - off
		off = end
	}
	return nil
}

// zero adds [from, to) to the pending zero range, applying the pending
// one first when they do not touch.
func (w *writer) zero(from, to int64) error {
	if w.zeroTo != from {
		if err := w.flushZeros(); err != nil {
			return err
		}
		w.zeroFrom = from
	}
	w.zeroTo = to
	return nil
}

// flushZeros makes the pending range read as zeros.
func (w *writer) flushZeros() error {
	from, to := w.zeroFrom, w.zeroTo
	w.zeroFrom, w.zeroTo = 0, 0
	if to <= from {
		return nil
	}
	w.zeroed += to - from
	if w.dev.DiscardZeroes || w.dev.WriteZeroes {
		req, what := uintptr(blkZeroOut), "zero"
		if w.dev.DiscardZeroes {
			req, what = unix.BLKDISCARD, "discard"
		}
		r := [2]uint64{uint64(from), uint64(to - from)}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(w.fd), req, uintptr(unsafe.Pointer(&r))); e != 0 {
			return fmt.Errorf("%s %s [%d, %d): %w", what, w.dev.Path, from, to, e)
		}
		return nil
	}
	// Read what is there; write zeros only over what is not zero already.
	for pos := from; pos < to; {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		// Pieces end at chunk boundaries, whatever the range's start.
		n := min(int64(chunk)-pos%chunk, to-pos)
		p := w.scratch[:n]
		if err := preadAll(w.fd, p, pos); err != nil {
			return fmt.Errorf("read %s at %d: %w", w.dev.Path, pos, err)
		}
		if !isZero(p) {
			clear(p)
			if err := pwriteAll(w.fd, p, pos); err != nil {
				return fmt.Errorf("write %s at %d: %w", w.dev.Path, pos, err)
			}
			w.zeroWritten += n
		}
		pos += n
	}
	return nil
}

// blkZeroOut is BLKZEROOUT, _IO(0x12, 127): zero a byte range
// [start, start+len) of a block device, with write-zeroes when the
// device has it.
const blkZeroOut = 0x127f

// verify reads the device's first size bytes back, bypassing the page
// cache, and compares each chunk's sha256 with the one written.
func (w *writer) verify(size int64, task progress.Task) error {
	for i, pos := 0, int64(0); pos < size; i++ {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		n := min(int64(chunk), size-pos)
		p := w.buf[:n]
		if err := preadAll(w.fd, p, pos); err != nil {
			return fmt.Errorf("read back %s at %d: %w", w.dev.Path, pos, err)
		}
		if chunkSum(p) != w.sums[i] {
			return fmt.Errorf("%s reads back other data than was written at bytes %d-%d (a failing or fake-capacity disk?)", w.dev.Path, pos, pos+n)
		}
		task.Write(p)
		pos += n
	}
	return nil
}

func isZero(p []byte) bool {
	for len(p) >= 8 {
		if *(*uint64)(unsafe.Pointer(&p[0])) != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// alignedBuffer is page-aligned memory, as O_DIRECT needs.
func alignedBuffer(n int) ([]byte, error) {
	return unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
}

func pwriteAll(fd int, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := unix.Pwrite(fd, p, off)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func preadAll(fd int, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := unix.Pread(fd, p, off)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}
