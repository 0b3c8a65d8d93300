import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Writing a file so that a reader sees either the old file or the whole new one, even when the
/// process is killed or the machine loses power part-way: the bytes go to a temporary file in the
/// same directory, are flushed to the disk (fsync), and the temporary file is renamed over the
/// target (rename is atomic within a file system); then the directory entry is flushed too.
/// The temporary file, `.NAME.tmp-PID`, is created afresh and never through a symbolic link (a
/// link planted under that name is removed, not followed); those left by killed runs are swept.
package enum AtomicFile {
    package static func write(_ data: Data, to url: URL) throws {
        let path = url.path
        let directory = url.deletingLastPathComponent().path
        let prefix = "." + url.lastPathComponent + ".tmp-"
        let temporary = directory + "/" + prefix + "\(getpid())"
        func fail(_ what: String) -> BackpropError {
            BackpropError(.format, "\(path): cannot write (\(what): \(String(cString: strerror(errno))))")
        }
        sweep(directory, prefix: prefix)
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
        var fd = open(temporary, flags, 0o644)
        if fd < 0, errno == EEXIST {  // this process's own leftover, or something planted there
            unlink(temporary)
            fd = open(temporary, flags, 0o644)
        }
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

    /// Removes the temporaries `<prefix><pid>` in `directory` whose process is gone.
    static func sweep(_ directory: String, prefix: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for name in names where name.hasPrefix(prefix) {
            guard let pid = pid_t(name.dropFirst(prefix.count)), pid > 0, pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { unlink(directory + "/" + name) }
        }
    }
}
