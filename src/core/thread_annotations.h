// Clang thread-safety annotations and an annotated mutex, so the compiler
// checks that fields are read and written only under the mutex that guards
// them (clang -Wthread-safety; other compilers ignore the annotations).
//
//   Mutex mutex_;
//   int size_ GUARDED_BY(mutex_) = 0;
//   void GrowLocked() REQUIRES(mutex_);
//   ...
//   MutexLock lock(mutex_);
//   while (!ready_) { lock.Wait(ready_changed_); }
//
// libstdc++'s std::mutex carries no annotations, hence the thin wrappers.
// Waits are written as explicit loops over the guarded condition rather than
// with predicate lambdas: the analysis does not know a lambda runs under the
// caller's lock.
//
// Threading: Mutex is a std::mutex; MutexLock belongs to the thread that made it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define PERCH_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define PERCH_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) PERCH_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY PERCH_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) PERCH_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) PERCH_THREAD_ANNOTATION(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) PERCH_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) PERCH_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define REQUIRES(...) PERCH_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) PERCH_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) PERCH_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) PERCH_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) PERCH_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) PERCH_THREAD_ANNOTATION(assert_capability(x))
#define RETURN_CAPABILITY(x) PERCH_THREAD_ANNOTATION(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS PERCH_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace perch {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() ACQUIRE() { mutex_.lock(); }
  void unlock() RELEASE() { mutex_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mutex_.try_lock(); }

 private:
  friend class MutexLock;
  std::mutex mutex_;
};

// Holds `mutex` for its scope, like std::unique_lock, and waits on condition
// variables with it.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mutex) ACQUIRE(mutex) : lock_(mutex.mutex_) {}
  ~MutexLock() RELEASE() = default;
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  // Lets others take the mutex for a while (e.g. around slow work).
  void Unlock() RELEASE() { lock_.unlock(); }
  void Lock() ACQUIRE() { lock_.lock(); }

  // Releases the mutex while waiting and holds it again on return; wakes
  // spuriously too, so callers loop over their condition.
  void Wait(std::condition_variable& condition) { condition.wait(lock_); }
  // False when `deadline` passed.
  template <typename Clock, typename Duration>
  bool WaitUntil(std::condition_variable& condition,
                 const std::chrono::time_point<Clock, Duration>& deadline) {
    return condition.wait_until(lock_, deadline) == std::cv_status::no_timeout;
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace perch
