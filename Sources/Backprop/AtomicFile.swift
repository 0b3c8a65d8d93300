import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Writing a file so that a reader sees either the old file or the whole new one, even when the
/// process is killed or the machine loses power part-way: the bytes go to a temporary file in the
/// same directory, are flushed to the disk (fsync), and the temporary file is renamed over the
/// target (rename is atomic within a file system); then the directory entry is flushed too.
package enum AtomicFile {
    package static func write(_ data: Data, to url: URL) throws {
        let path = url.path
        let directory = url.deletingLastPathComponent().path
        let temporary = directory + "/." + url.lastPathComponent + ".tmp-\(getpid())"
        func fail(_ what: String) -> BackpropError {
            BackpropError(.format, "\(path): cannot write (\(what): \(String(cString: strerror(errno))))")
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw fail("open \(temporary)") }
        var ok = data.withUnsafeBytes { raw -> Bool in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += written
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        let closed = close(fd) == 0
        guard ok, closed else {
            let error = fail("write \(temporary)")
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let error = fail("rename \(temporary)")
            unlink(temporary)
            throw error
        }
        let directoryFD = open(directory, O_RDONLY)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
    }
}
