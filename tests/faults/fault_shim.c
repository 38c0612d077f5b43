/* A disk that fails on command, for the fault suite (tests/faults/disk.py builds it).

   Loaded with LD_PRELOAD into a real server process. It watches the files whose real path
   contains FAULT_SHIM_PATH (the ledger directory) from the moment they are opened, and
   while the file FAULT_SHIM_CONTROL exists, fails calls on them as its one line says,
   "CALL ERRNO [HOW]":

     write EIO torn    the first failing write writes half its bytes and returns that short
                       count (a frame torn on disk); every later write fails
     write ENOSPC      every write fails before writing anything
     fsync EIO lose    fsync and fdatasync fail, and the bytes written since the file's last
                       good fsync are cut from it: what a reboot leaves when the device
                       never took them
     fsync ENOSPC      fsync and fdatasync fail; the bytes stay in the file (Linux keeps
                       them in the page cache)

   Removing the control file ends the fault. Each failed call appends one line to
   FAULT_SHIM_CONTROL.hits, so a test knows the fault was met. Other descriptors go
   straight to libc: a socket write costs one array lookup more. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define FDS_MAX 65536
#define CONTROL_BYTES_MAX 128

static char watched[FDS_MAX];       /* 1: a file under FAULT_SHIM_PATH */
static char torn[FDS_MAX];          /* 1: this file's torn write was made */
static off_t synced_bytes[FDS_MAX]; /* its size at the last good fsync, or at open */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);

__attribute__((constructor)) static void setup(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
}

static int is_watched(int fd) { return fd >= 0 && fd < FDS_MAX && watched[fd]; }

static void watch(int fd, const char *path) {
    const char *wanted = getenv("FAULT_SHIM_PATH");
    if (fd < 0 || fd >= FDS_MAX || path == NULL || wanted == NULL || *wanted == '\0') return;
    char link[64], name[PATH_MAX];
    /* The kernel's name for what was opened: relative paths and symlinks resolved. */
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t length = readlink(link, name, sizeof name - 1);
    if (length <= 0) return;
    name[length] = '\0';
    if (strstr(name, wanted) == NULL) return;
    struct stat status;
    off_t size = fstat(fd, &status) == 0 ? status.st_size : 0;
    pthread_mutex_lock(&lock);
    watched[fd] = 1;
    torn[fd] = 0;
    synced_bytes[fd] = size;
    pthread_mutex_unlock(&lock);
}

static void record_hit(const char *control, const char *what) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s.hits", control);
    int fd = real_open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    ssize_t ignored = real_write(fd, what, strlen(what));
    (void)ignored;
    real_close(fd);
}

/* The errno to fail `call` ("write" or "fsync") with now, 0 for none; `how` gets the
   third word of the control line. */
static int fault_for(const char *call, char *how, size_t how_size) {
    const char *control = getenv("FAULT_SHIM_CONTROL");
    if (control == NULL) return 0;
    int fd = real_open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char text[CONTROL_BYTES_MAX + 1];
    ssize_t length = read(fd, text, CONTROL_BYTES_MAX);
    real_close(fd);
    if (length <= 0) return 0;
    text[length] = '\0';
    char wanted_call[16] = "", error_name[16] = "", third[16] = "";
    if (sscanf(text, "%15s %15s %15s", wanted_call, error_name, third) < 2) return 0;
    if (strcmp(wanted_call, call) != 0) return 0;
    snprintf(how, how_size, "%s", third);
    if (strcmp(error_name, "EIO") == 0) return EIO;
    if (strcmp(error_name, "ENOSPC") == 0) return ENOSPC;
    if (strcmp(error_name, "EDQUOT") == 0) return EDQUOT;
    return 0;
}

ssize_t write(int fd, const void *buffer, size_t count) {
    if (!is_watched(fd)) return real_write(fd, buffer, count);
    char how[16] = "";
    int error = fault_for("write", how, sizeof how);
    if (error == 0) return real_write(fd, buffer, count);
    const char *control = getenv("FAULT_SHIM_CONTROL");
    pthread_mutex_lock(&lock);
    int tear = strcmp(how, "torn") == 0 && !torn[fd] && count > 1;
    if (tear) torn[fd] = 1;
    pthread_mutex_unlock(&lock);
    if (tear) {
        record_hit(control, "write torn\n");
        return real_write(fd, buffer, count / 2);
    }
    record_hit(control, "write failed\n");
    errno = error;
    return -1;
}

static int sync_or_fail(int fd, int (*real)(int)) {
    if (!is_watched(fd)) return real(fd);
    char how[16] = "";
    int error = fault_for("fsync", how, sizeof how);
    if (error == 0) {
        int result = real(fd);
        struct stat status;
        if (result == 0 && fstat(fd, &status) == 0) {
            pthread_mutex_lock(&lock);
            synced_bytes[fd] = status.st_size;
            pthread_mutex_unlock(&lock);
        }
        return result;
    }
    if (strcmp(how, "lose") == 0) {
        pthread_mutex_lock(&lock);
        off_t keep = synced_bytes[fd];
        pthread_mutex_unlock(&lock);
        if (ftruncate(fd, keep) != 0) return -1;
    }
    record_hit(getenv("FAULT_SHIM_CONTROL"), "fsync failed\n");
    errno = error;
    return -1;
}

int fsync(int fd) { return sync_or_fail(fd, real_fsync); }

int fdatasync(int fd) { return sync_or_fail(fd, real_fdatasync); }

static mode_t mode_of(int flags, va_list arguments) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(arguments, mode_t) : 0;
}

int open(const char *path, int flags, ...) {
    va_list arguments;
    va_start(arguments, flags);
    mode_t mode = mode_of(flags, arguments);
    va_end(arguments);
    int fd = real_open(path, flags, mode);
    watch(fd, path);
    return fd;
}

int open64(const char *path, int flags, ...) {
    va_list arguments;
    va_start(arguments, flags);
    mode_t mode = mode_of(flags, arguments);
    va_end(arguments);
    int fd = real_open64(path, flags, mode);
    watch(fd, path);
    return fd;
}

int openat(int directory_fd, const char *path, int flags, ...) {
    va_list arguments;
    va_start(arguments, flags);
    mode_t mode = mode_of(flags, arguments);
    va_end(arguments);
    int fd = real_openat(directory_fd, path, flags, mode);
    watch(fd, path);
    return fd;
}

int openat64(int directory_fd, const char *path, int flags, ...) {
    va_list arguments;
    va_start(arguments, flags);
    mode_t mode = mode_of(flags, arguments);
    va_end(arguments);
    int fd = real_openat64(directory_fd, path, flags, mode);
    watch(fd, path);
    return fd;
}

int close(int fd) {
    if (fd >= 0 && fd < FDS_MAX && watched[fd]) {
        pthread_mutex_lock(&lock);
        watched[fd] = 0;
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}
