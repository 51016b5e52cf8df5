// Versions: Android Gradle plugin 8.5.2 (Gradle 8.7+, JDK 17), Kotlin 1.9.24.
plugins {
    id("com.android.application") version "8.5.2" apply false
    id("org.jetbrains.kotlin.android") version "1.9.24" apply false
}
